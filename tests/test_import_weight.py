"""What a command-line process imports before it does any work: the ingest path stays light.

Not a timing test: it checks which heavy packages are loaded, in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ["zarr", "numba", "torch", "pandas", "pyarrow", "distributed", "dask", "boto3"]


def _loaded(code: str) -> list[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_cli_start_imports_nothing_heavy():
    assert _loaded("import featurestore.cli") == []


def test_spotify_ingest_module_needs_no_zarr_numba_torch_or_pyarrow():
    # zarr, numba, pyarrow: loaded on first use (reading a store, decoding, writing the id lists)
    assert _loaded("import featurestore.cli.spotify, featurestore.ingest.spotify, featurestore.ingest.sources") == []


def test_store_exports_resolve_lazily():
    from featurestore import store
    from featurestore.store.errors import InputError
    from featurestore.store.ragged import RaggedWriter

    assert store.InputError is InputError and store.RaggedWriter is RaggedWriter
    assert sorted(store.__all__) == sorted(store._WHERE)
    # a reader needs zarr and pyarrow, not numba (decoding loads it), torch or Dask
    assert set(_loaded("from featurestore.store import Store")) == {"zarr", "pyarrow"}


def test_a_whole_spotify_ingest_process_loads_no_pyarrow_zarr_or_numba(raw, tmp_path):
    """Id lists and dictionaries are written with polars, arrays with ``store.chunks``: an ingest process
    pays for none of the readers' packages."""
    code = (f"from featurestore.cli import main\n"
            f"main(['ingest', 'spotify', {str(raw)!r}, {str(tmp_path / 's')!r}], standalone_mode=False)")
    assert _loaded(code) == []
    from featurestore.store import Store

    assert Store(tmp_path / "s").validate() == []
