"""GPU-ready batch builders over fstore stores.

Pieces, FFCV-style: traversal orders (``orders``), rank sharding (``sharding``), numba batch
kernels (``kernels``), the pinned prefetch ring (``prefetch``), and one loader per batch kind.
"""

from .orders import ORDERS, epoch_order
from .session_cache import LOG_COLUMNS
from .sessions import SessionBatches

__all__ = ["LOG_COLUMNS", "ORDERS", "SessionBatches", "epoch_order"]
