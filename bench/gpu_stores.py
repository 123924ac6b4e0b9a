"""The GPU check's own synthetic stores, one per family, built in a scratch folder: small enough to build
in about two minutes on a GPU machine's cores (``SIZES["gpu"]``), tiny for the CPU dry run."""

from __future__ import annotations

from pathlib import Path

__all__ = ["SIZES", "build_stores"]

SIZES = {
    "gpu": {"spotify": {"sessions": 100_000, "tracks": 20_000}, "melon": {"playlists": 6_000, "songs": 8_000},
            "yandex": {"tracks": 1_500, "artists": 150, "test_tracks": 10},
            "fsd": {"curated": 300, "noisy": 300, "test_clips": 5},
            "speakers": {"speakers": 40, "utterances_per_speaker": 20, "test_utterances": 10}},
    "dry": {"spotify": {"sessions": 400, "tracks": 200}, "melon": {"playlists": 200, "songs": 300},
            "yandex": {"tracks": 120, "artists": 15, "test_tracks": 4},
            "fsd": {"curated": 24, "noisy": 12, "classes": 4, "test_clips": 2, "max_seconds": 1.0},
            "speakers": {"speakers": 4, "utterances_per_speaker": 5, "test_utterances": 2}},
}


def build_stores(work: Path, size: str) -> dict[str, Path]:
    """Synthesize and ingest every family's store under ``work``; returns family -> store path."""
    from featurestore.ingest.fsd import ingest_fsd
    from featurestore.ingest.melon import ingest_melon
    from featurestore.ingest.speakers import ingest_speakers
    from featurestore.ingest.spotify import ingest_spotify
    from featurestore.ingest.yandex import ingest_yandex
    from featurestore.synth.fsd import synth_fsd
    from featurestore.synth.melon import synth_melon
    from featurestore.synth.speakers import synth_speakers
    from featurestore.synth.spotify import synth_spotify
    from featurestore.synth.yandex import synth_yandex

    s = SIZES[size]
    steps = {"spotify": (lambda raw: synth_spotify(raw, seed=1, **s["spotify"]), ingest_spotify),
             "melon": (lambda raw: synth_melon(raw, seed=1, progress=False, **s["melon"]), ingest_melon),
             "yandex": (lambda raw: synth_yandex(raw, seed=1, **s["yandex"]), ingest_yandex),
             "fsd": (lambda raw: synth_fsd(raw, seed=1, **s["fsd"]), ingest_fsd),
             "speakers": (lambda raw: synth_speakers(raw, seed=1, **s["speakers"]), ingest_speakers)}
    stores = {}
    for family, (synth, ingest) in steps.items():
        raw, store = work / f"{family}_raw", work / f"{family}.fstore"
        synth(raw)
        ingest(raw, store, progress=False)
        stores[family] = store
    return stores
