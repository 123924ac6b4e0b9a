import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

settings.register_profile(
    "fstore", deadline=None, max_examples=int(os.environ.get("FSTORE_HYPOTHESIS_EXAMPLES", "40")),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile("fstore")


@pytest.fixture(scope="session")
def raw(tmp_path_factory) -> Path:
    """Synthetic MSSD release shared by the ingest, loader and model tests (tests mutate copies only)."""
    from featurestore.synth.spotify import synth_spotify

    out = tmp_path_factory.mktemp("mssd_raw")
    synth_spotify(out, sessions=700, tracks=300, seed=5, train_files=3)
    return out


@pytest.fixture(scope="session")
def store(raw, tmp_path_factory):
    """The store ingested from ``raw``."""
    from featurestore.ingest.spotify import ingest_spotify
    from featurestore.store import Store

    path = tmp_path_factory.mktemp("mssd_store") / "s.fstore"
    ingest_spotify(raw, path, progress=False)
    return Store(path)



@pytest.fixture(scope="session")
def frames_store(tmp_path_factory):
    """A small Yandex frame store (120 tracks of 15 artists) for the loader tests (read only)."""
    from featurestore.ingest.yandex import ingest_yandex
    from featurestore.store import Store
    from featurestore.synth.yandex import synth_yandex

    raw = tmp_path_factory.mktemp("yraw")
    synth_yandex(raw, tracks=120, artists=15, test_tracks=8, seed=4)
    path = tmp_path_factory.mktemp("yst") / "y.fstore"
    ingest_yandex(raw, path, progress=False)
    return Store(path)
