"""The on-disk store: feature tables, ragged sequences, dictionaries, manifest.

Names are loaded on first use (PEP 562): ``from featurestore.store.errors import FstoreError`` (what
the command line needs before it knows the command) then costs no zarr, pyarrow or numpy import."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "staged_directory": "atomic",
    "Dictionary": "dictionary",
    "IdListWriter": "dictionary",
    "FstoreError": "errors",
    "InputError": "errors",
    "StoreError": "errors",
    "FeatureTable": "feature_table",
    "FeatureTableWriter": "feature_table",
    "write_manifest": "manifest",
    "RaggedSet": "ragged",
    "RaggedWriter": "ragged",
    "Store": "store",
}
__all__ = [
    "Dictionary", "FeatureTable", "FeatureTableWriter", "FstoreError", "IdListWriter", "InputError", "RaggedSet",
    "RaggedWriter", "Store", "StoreError", "staged_directory", "write_manifest",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from .atomic import staged_directory
    from .dictionary import Dictionary, IdListWriter
    from .errors import FstoreError, InputError, StoreError
    from .feature_table import FeatureTable, FeatureTableWriter
    from .manifest import write_manifest
    from .ragged import RaggedSet, RaggedWriter
    from .store import Store
