"""GPU-ready batch builders over fstore stores.

Pieces, FFCV-style: traversal orders (``orders``, a registry), rank sharding (``sharding``), numba
batch kernels (``kernels``) and the one padding step (``padding``), the pinned prefetch ring
(``prefetch``), one loader base (``base.BatchLoader``: epochs, ranks, workers, resume state), and one
small subclass per batch kind (``sessions``, ``segments``, ``playlists``).
"""

from featurestore.schemas.mssd import BATCH_LOG_COLUMNS

from .augment import mixup, spec_augment
from .base import BatchLoader
from .orders import ORDERS, epoch_order
from .playlists import PlaylistBatches, multi_hot
from .segments import SegmentBatches, linear_curriculum
from .sessions import SessionBatches

LOG_COLUMNS = BATCH_LOG_COLUMNS  # the old name of the schema's list

__all__ = ["BATCH_LOG_COLUMNS", "LOG_COLUMNS", "ORDERS", "BatchLoader", "PlaylistBatches", "SegmentBatches", "SessionBatches",
           "epoch_order", "linear_curriculum", "mixup", "multi_hot", "spec_augment"]
