"""The on-disk store: feature tables, ragged sequences, dictionaries, manifest."""

from .atomic import staged_directory
from .dictionary import Dictionary, IdListWriter
from .errors import FstoreError, InputError, StoreError
from .feature_table import FeatureTable, FeatureTableWriter
from .manifest import write_manifest
from .ragged import RaggedSet, RaggedWriter
from .store import Store

__all__ = [
    "Dictionary",
    "FeatureTable",
    "FeatureTableWriter",
    "FstoreError",
    "IdListWriter",
    "InputError",
    "RaggedSet",
    "RaggedWriter",
    "Store",
    "StoreError",
    "staged_directory",
    "write_manifest",
]
