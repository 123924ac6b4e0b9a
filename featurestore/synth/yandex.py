"""Synthetic Yandex Cup 2022 (ML audio: same-artist track retrieval) data in the raw release format.

Layout written under ``out_dir`` (DATASETS.md section 3)::

    train_meta.tsv   header "trackid<TAB>artistid<TAB>archive_features_path", one row per train track
    test_meta.tsv    header "trackid<TAB>archive_features_path", one row per test track (no artist: hidden)
    {fold}/{trackid}.npy   float32 matrix of shape (512, T), 61 <= T <= 81, fold = trackid % 10

The features root is ``out_dir`` itself: ``archive_features_path`` is relative to the directory holding
the two meta files, and its first path component (``0``..``9``) is the fold id, as in the real release
(which shipped ``train_features/`` and ``test_features/`` roots; a loader must join a root it is given
with ``archive_features_path``). Track ids are unique over train and test together.

Planted structure (a track is a ``512 x T`` matrix ``x``; ``d`` a feature, ``t`` a time step)::

    z[d, t] = G[genre(a), d] + 0.25 * A[a, d] + 0.9 * O[track, d] + 0.5 * W[track, d] * sin(w t + phi)
              + 1.0 * eps[d, t]
    x[d, t] = mu[d] + s[d] * z[d, t]

- ``G``: one random 512-d centroid per genre (about one genre per 10 artists), ``A``: the artist's own
  random direction, so an artist centroid is ``G + 0.25 A`` and artists of one genre are near each other.
- ``O`` a per-track offset (stronger than the artist signal, so single tracks are noisy), ``W`` a per-track
  slow drift along time, ``eps`` i.i.d. frame noise. All of ``G, A, O, W, eps`` are standard normal.
- Skewed per-feature scales: ``s[d]`` is log-normal (spread of e^±2), and 5 % of the features are
  "loud" (scale x 60, large offsets) while carrying **no** artist or genre signal, only track nuisance.
  A single global scale/offset 8-bit code therefore crushes the informative features; per-feature
  (or quantile) codes keep them.
- Artist track counts are skewed (heavy-tailed), and about 10 % of the artists have exactly one track
  (the metric skips those as queries). Test tracks come from a separate set of artists (open-set
  retrieval, as in the competition); their artists are not written anywhere.

Mean-over-time features with per-feature standardisation separate artists well with a nearest-centroid
rule (far above chance) without being trivially perfect.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from featurestore.schemas import yandex as S
from featurestore.store.folders import prepare_out_dir
from featurestore.synth.audio_common import SynthSummary, tree_size

__all__ = ["synth_yandex", "FEATURE_DIM", "MIN_STEPS", "MAX_STEPS"]

FEATURE_DIM = S.FEATURES
MIN_STEPS = S.SYNTH_MIN_STEPS
MAX_STEPS = S.MAX_STEPS

_ARTIST_SIGNAL = 0.25
_TRACK_OFFSET = 0.9
_DRIFT = 0.5
_FRAME_NOISE = 1.0
_LOUD_FRACTION = 0.05
_LOUD_SCALE = 60.0
_SINGLE_FRACTION = 0.1
_BATCH = 128


def _artist_counts(rng: np.random.Generator, n_tracks: int, n_artists: int) -> np.ndarray:
    """Skewed tracks-per-artist counts summing to ``n_tracks``; about 10 % of artists get exactly one."""
    if n_artists < 1:
        raise ValueError("need at least one artist")
    n_single = int(round(n_artists * _SINGLE_FRACTION)) if n_artists > 1 else 0
    n_multi = n_artists - n_single
    if n_tracks < n_single + 2 * n_multi:
        if n_tracks < n_artists:
            raise ValueError(f"{n_tracks} tracks cannot cover {n_artists} artists")
        # too few tracks for the guarantee: fall back to one each plus skewed extras
        n_single, n_multi = 0, n_artists
        base = np.ones(n_artists, dtype=np.int64)
    else:
        base = np.concatenate([np.ones(n_single, np.int64), np.full(n_multi, 2, np.int64)])
    extra = n_tracks - int(base.sum())
    weights = rng.lognormal(0.0, 1.0, size=n_multi)
    counts = base.copy()
    counts[n_single:] += rng.multinomial(extra, weights / weights.sum())
    return rng.permutation(counts)


def synth_yandex(
    out_dir: str | Path,
    tracks: int = 2000,
    artists: int = 200,
    test_tracks: int = 300,
    seed: int = 0,
    overwrite: bool = False,
) -> SynthSummary:
    """Write a synthetic Yandex Cup 2022 artist-retrieval data set under ``out_dir``.

    ``tracks`` train tracks by ``artists`` artists, plus ``test_tracks`` test tracks by a separate, hidden
    set of artists. Returns a :class:`SynthSummary` (classes = number of train artists).
    """
    if tracks < 1 or test_tracks < 0:
        raise ValueError("tracks must be >= 1 and test_tracks >= 0")
    out = prepare_out_dir(out_dir, overwrite)
    rng = np.random.default_rng(seed)

    n_test_artists = max(1, int(round(artists * test_tracks / tracks))) if test_tracks else 0
    n_test_artists = min(n_test_artists, test_tracks)
    train_counts = _artist_counts(rng, tracks, artists)
    test_counts = _artist_counts(rng, test_tracks, n_test_artists) if test_tracks else np.zeros(0, np.int64)
    n_all_artists = artists + n_test_artists
    n_all = tracks + test_tracks

    # ids: artist ids distinct, track ids distinct over train + test
    artist_ids = rng.choice(max(10 * n_all_artists, 1000), size=n_all_artists, replace=False).astype(np.int64)
    track_ids = rng.permutation(n_all).astype(np.int64)
    track_artist = np.concatenate(
        [
            np.repeat(np.arange(artists), train_counts),
            artists + np.repeat(np.arange(n_test_artists), test_counts),
        ]
    )
    # shuffle which track id belongs to which artist inside each split
    train_order = rng.permutation(tracks)
    test_order = tracks + rng.permutation(test_tracks)
    track_artist = track_artist[np.concatenate([train_order, test_order])]
    steps = rng.integers(MIN_STEPS, MAX_STEPS + 1, size=n_all)

    # latent structure
    n_genres = max(1, n_all_artists // 10)
    genre_of_artist = rng.integers(0, n_genres, size=n_all_artists)
    genres = rng.standard_normal((n_genres, FEATURE_DIM), dtype=np.float32)
    artist_dirs = rng.standard_normal((n_all_artists, FEATURE_DIM), dtype=np.float32)
    artist_centroid = genres[genre_of_artist] + np.float32(_ARTIST_SIGNAL) * artist_dirs

    n_loud = max(1, int(round(FEATURE_DIM * _LOUD_FRACTION)))
    loud = np.zeros(FEATURE_DIM, dtype=bool)
    loud[rng.choice(FEATURE_DIM, size=n_loud, replace=False)] = True
    scale = np.exp(rng.normal(0.0, 0.7, size=FEATURE_DIM)).astype(np.float32)
    scale[loud] *= np.float32(_LOUD_SCALE)
    offset = (rng.normal(0.0, 1.0, size=FEATURE_DIM) * scale * 2.0).astype(np.float32)
    informative = (~loud).astype(np.float32)
    artist_centroid *= informative  # loud features carry no artist or genre signal

    # metadata files
    fold = track_ids % S.FOLDS
    rel = [f"{f}/{t}.npy" for f, t in zip(fold.tolist(), track_ids.tolist(), strict=True)]
    written: list[Path] = []
    train_idx = np.argsort(track_ids[:tracks], kind="stable")
    test_idx = tracks + np.argsort(track_ids[tracks:], kind="stable")
    train_lines = ["\t".join(S.TRAIN_COLUMNS)]
    train_lines += [f"{track_ids[i]}\t{artist_ids[track_artist[i]]}\t{rel[i]}" for i in train_idx.tolist()]
    test_lines = ["\t".join(S.TEST_COLUMNS)]
    test_lines += [f"{track_ids[i]}\t{rel[i]}" for i in test_idx.tolist()]
    for name, lines in ((S.TRAIN_META, train_lines), (S.TEST_META, test_lines)):
        p = out / name
        p.write_text("\n".join(lines) + "\n", encoding="utf-8")
        written.append(p)
    for f in range(S.FOLDS):
        (out / str(f)).mkdir(exist_ok=True)

    # features, generated in batches padded to MAX_STEPS
    t_axis = np.arange(MAX_STEPS, dtype=np.float32)
    for start in range(0, n_all, _BATCH):
        stop = min(start + _BATCH, n_all)
        b = stop - start
        base = artist_centroid[track_artist[start:stop]]
        base += np.float32(_TRACK_OFFSET) * rng.standard_normal((b, FEATURE_DIM), dtype=np.float32)
        drift = np.float32(_DRIFT) * rng.standard_normal((b, FEATURE_DIM), dtype=np.float32)
        freq = rng.uniform(0.02, 0.15, size=(b, 1)).astype(np.float32) * np.float32(2 * np.pi)
        phase = rng.uniform(0, 2 * np.pi, size=(b, 1)).astype(np.float32)
        wave = np.sin(freq * t_axis[None, :] + phase)  # (b, T)
        z = rng.standard_normal((b, FEATURE_DIM, MAX_STEPS), dtype=np.float32)
        if _FRAME_NOISE != 1.0:
            z *= np.float32(_FRAME_NOISE)
        z += base[:, :, None]
        z += drift[:, :, None] * wave[:, None, :]
        z *= scale[None, :, None]
        z += offset[None, :, None]
        for j in range(b):
            i = start + j
            p = out / rel[i]
            np.save(p, np.ascontiguousarray(z[j, :, : steps[i]]))
            written.append(p)

    return SynthSummary(files=len(written), clips=n_all, classes=artists, bytes=tree_size(written))
