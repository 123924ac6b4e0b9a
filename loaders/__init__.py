"""GPU-ready batch builders over fstore stores.

Pieces, FFCV-style: traversal orders (``orders``), rank sharding (``sharding``), numba batch
kernels (``kernels``), the pinned prefetch ring (``prefetch``), and one loader per batch kind.
"""

from .augment import mixup, spec_augment
from .orders import ORDERS, epoch_order
from .segments import SegmentBatches, linear_curriculum
from .session_cache import LOG_COLUMNS
from .sessions import SessionBatches

__all__ = ["LOG_COLUMNS", "ORDERS", "SegmentBatches", "SessionBatches", "epoch_order", "linear_curriculum",
           "mixup", "spec_augment"]
