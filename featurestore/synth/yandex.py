"""Synthetic Yandex Cup 2022 (ML audio: same-artist track retrieval) data in the raw release format.

Layout written under ``out_dir`` (DATASETS.md section 3)::

    train_meta.tsv   header "trackid<TAB>artistid<TAB>archive_features_path", one row per train track
    test_meta.tsv    header "trackid<TAB>archive_features_path", one row per test track (no artist: hidden)
    {fold}/{trackid}.npy   float32 matrix of shape (512, T), 61 <= T <= 81, fold = trackid % 10
    _planted/planted.npz   the generator's truth (not part of the release format; read by the oracle)

The features root is ``out_dir`` itself: ``archive_features_path`` is relative to the directory holding
the two meta files, and its first path component (``0``..``9``) is the fold id, as in the real release
(which shipped ``train_features/`` and ``test_features/`` roots; a loader must join a root it is given
with ``archive_features_path``). Track ids are unique over train and test together.

Planted structure. A track is a ``512 x T`` matrix ``x[:, t] = mu + s * z[:, t]`` (``s``, ``mu``:
per-feature scales and offsets) with the latent frames ``z[:, t] = m + y[:, t] + eps[:, t]``:

- **mean** ``m`` (one 512-vector per track)::

      m = GENRE * G[genre] + ARTIST_MEAN * A[artist] + TRACK_OFFSET * O[track]
          + CHAIN * (C[chain] + gain * 1 + tilt * ramp)

  ``G``, ``A``, ``O`` standard normal: the artist's own mean direction is weak beside the genre's (about
  one genre per 10 artists), so a mean-pooled cosine ranks the artist's genre mates about as high as
  the artist; ``O`` moves every track apart. The recording chain is per-track nuisance that moves the
  mean: one of ``CHAINS`` smooth random "EQ" curves ``C`` (drawn per track, independent of the artist),
  a mastering gain (all features up or down) and a spectral tilt (a ramp over the feature index). It
  lives in a (CHAINS + 2)-dimensional subspace a learned encoder can project out; a cosine cannot.
- **dynamics** ``y`` (zero mean over every track, so invisible to the mean)::

      y[:, t] = DYNAMICS * sum_k w[k, t] * U[artist, k],   U[artist] = M[artist] @ D,
      M[artist] = rownorm(GENRE_DYNAMICS * M_g[genre] + M_a[artist])

  ``D``: ``ATOMS`` orthonormal 512-d directions shared by all artists (the subspace an encoder can
  learn from the training artists and use on unseen ones); each artist co-varies its features along
  ``RANK`` unit directions mixed from them, partly shared with its genre. The weights ``w[k, :]`` are an
  AR(1) process with an artist-specific frame-to-frame correlation ``rho`` (0.2..0.95: slow or
  jittery artists), made exactly zero-mean and unit-variance over each track's frames.
- ``eps`` i.i.d. standard normal frame noise (``FRAME_NOISE``).
- Skewed per-feature scales: ``s`` is log-normal (spread of e^±2), and 5 % of the features are "loud"
  (scale x 60, large offsets) while carrying **no** artist or genre signal, only track nuisance. A
  single global scale/offset 8-bit code therefore crushes the informative features; per-feature (or
  quantile) codes keep them.
- Artist track counts are skewed (heavy-tailed), and about 10 % of the artists have exactly one track
  (the metric skips those as queries). Test tracks come from a separate set of artists (open-set
  retrieval, as in the competition); their artists are not written in the release files.

Tracks are generated 128 at a time, so memory does not grow with the size (peak RSS 112 MB for
2,300 tracks, 119 MB for 11,500; time linear: 26 s and 120 s, 2 CPU cores at load 34); the artist
tables are 2 KB per artist.

Difficulty knobs (module constants) and their measured effect, nDCG@100 on the 40 held-out artists of
the default sizes (baseline: standardised mean-pooled cosine; ceiling: :func:`oracle_profiles`; one
knob changed at a time, seed 0, no test tracks; model: ``fstore train yandex --max-minutes 5``, 17
epochs on 2 CPU cores at load 17-25, triplet loss; in brackets the earlier loss-sum model):

==============================  ========  ========  =======
setting                         baseline  ceiling   model
==============================  ========  ========  =======
defaults                        0.381     1.000     0.673 (0.495); baseline 0.354 on the CLI's store
``DYNAMICS = 0``                0.381     0.777     0.673 (0.496); same checkpoint, same tracks
``CHAIN = 0``                   0.960     1.000
``GENRE = 0``                   0.168     1.000
``ARTIST_MEAN = 0.6``           0.439     1.000
``TRACK_OFFSET = 0.45``         0.394     1.000
``DYNAMICS = 3, ATOMS = 8``     0.341     1.000     (0.364: 3 minutes, load 25)
==============================  ========  ========  =======

- ``CHAIN`` (recording-chain nuisance) is what holds the mean-pooled cosine down: without it the
  baseline is 0.96. The trained encoder's margin over the baseline comes from learning to discard
  the chain subspace. The same checkpoint gets the same score on a copy of the same tracks without
  dynamics (``DYNAMICS = 0``, same seed), so with 5 CPU minutes it does not use the co-variation yet.
  The ceiling shows the co-variation carries signal (0.777 -> 1.000).
- ``GENRE`` makes genre mates look alike; with ``GENRE = 0`` the standardised mean is dominated by the
  chain and the baseline drops to 0.17.
- Stronger, lower-dimensional dynamics (``DYNAMICS = 3, ATOMS = 8``) made the 3-minute model worse,
  not better: short random crops of strongly autocorrelated tracks are not zero-mean, so the
  dynamics leak into crop means as noise.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from featurestore.schemas import yandex as S
from featurestore.store.errors import FstoreError
from featurestore.store.folders import prepare_out_dir
from featurestore.synth.audio_common import SynthSummary, tree_size
from featurestore.synth.planted import planted_file, read_npz

__all__ = ["synth_yandex", "oracle_profiles", "planted_path", "read_planted", "FEATURE_DIM", "MIN_STEPS", "MAX_STEPS", "PLANTED"]

FEATURE_DIM = S.FEATURES
MIN_STEPS = S.SYNTH_MIN_STEPS
MAX_STEPS = S.MAX_STEPS
PLANTED = "_planted/planted.npz"

GENRE = 1.0
ARTIST_MEAN = 0.3
TRACK_OFFSET = 0.9
CHAIN = 1.5
CHAINS = 6
DYNAMICS = 2.0
ATOMS = 16
RANK = 2
GENRE_DYNAMICS = 0.7
FRAME_NOISE = 1.0
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


class _Latents:
    """Artist, genre and nuisance parameters (everything the oracle needs is in :meth:`save`)."""

    def __init__(self, rng: np.random.Generator, n_artists: int):
        d = FEATURE_DIM
        n_genres = max(1, n_artists // 10)
        self.genre = rng.integers(0, n_genres, size=n_artists)
        genres = rng.standard_normal((n_genres, d), dtype=np.float32)
        self.mean = GENRE * genres[self.genre]
        self.mean += np.float32(ARTIST_MEAN) * rng.standard_normal((n_artists, d), dtype=np.float32)
        self.atoms = np.linalg.qr(rng.standard_normal((d, ATOMS)))[0].T.astype(np.float32)  # (ATOMS, d)
        mix = GENRE_DYNAMICS * rng.standard_normal((n_genres, RANK, ATOMS))[self.genre]
        mix += rng.standard_normal((n_artists, RANK, ATOMS))
        self.mix = (mix / np.linalg.norm(mix, axis=2, keepdims=True)).astype(np.float32)  # (A, RANK, ATOMS)
        self.rho = rng.uniform(0.2, 0.95, size=n_artists).astype(np.float32)
        ramp = np.linspace(-1.0, 1.0, d, dtype=np.float32)
        # smooth EQ curves: random low-order cosine series over the feature index
        order = np.arange(1, 6, dtype=np.float32)
        coef = rng.standard_normal((CHAINS, order.size)).astype(np.float32) / order
        curves = coef @ np.cos(np.pi * order[:, None] * (ramp[None, :] + 1) / 2)
        curves /= curves.std(axis=1, keepdims=True)
        self.chains = curves.astype(np.float32)  # (CHAINS, d)
        self.nuisance = np.vstack([curves, np.ones((1, d), np.float32), ramp[None]])  # the chain subspace

    def save(self, path: Path, track_ids: np.ndarray, track_artist: np.ndarray, scale: np.ndarray,
             offset: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            np.savez_compressed(f, track_ids=track_ids, track_artist=track_artist, genre=self.genre,
                                mean=self.mean, atoms=self.atoms, mix=self.mix, rho=self.rho,
                                nuisance=self.nuisance, scale=scale, offset=offset)


def _dynamics(rng: np.random.Generator, rho: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """(b, RANK, MAX_STEPS) AR(1) weights, zero-mean and unit-variance over each track's ``steps``."""
    b = rho.size
    noise = rng.standard_normal((b, RANK, MAX_STEPS), dtype=np.float32)
    w = np.empty_like(noise)
    w[..., 0] = noise[..., 0]
    keep, fresh = rho[:, None], np.sqrt(1 - rho**2)[:, None]
    for t in range(1, MAX_STEPS):
        w[..., t] = keep * w[..., t - 1] + fresh * noise[..., t]
    real = (np.arange(MAX_STEPS)[None, :] < steps[:, None])[:, None, :]
    n = steps[:, None, None].astype(np.float32)
    w -= (w * real).sum(-1, keepdims=True) / n
    w /= np.sqrt(((w * real) ** 2).sum(-1, keepdims=True) / n)
    return w * real


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
    set of artists, and the truth in ``_planted/``. Returns a :class:`SynthSummary` (classes = number of
    train artists).
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

    latents = _Latents(rng, n_all_artists)
    n_loud = max(1, int(round(FEATURE_DIM * _LOUD_FRACTION)))
    loud = np.zeros(FEATURE_DIM, dtype=bool)
    loud[rng.choice(FEATURE_DIM, size=n_loud, replace=False)] = True
    scale = np.exp(rng.normal(0.0, 0.7, size=FEATURE_DIM)).astype(np.float32)
    scale[loud] *= np.float32(_LOUD_SCALE)
    offset = (rng.normal(0.0, 1.0, size=FEATURE_DIM) * scale * 2.0).astype(np.float32)
    informative = (~loud).astype(np.float32)  # loud features carry no artist or genre signal

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
    planted = out / PLANTED
    latents.save(planted, track_ids, track_artist, scale, offset)
    written.append(planted)

    # features, generated in batches padded to MAX_STEPS
    for start in range(0, n_all, _BATCH):
        stop = min(start + _BATCH, n_all)
        b = stop - start
        who = track_artist[start:stop]
        chain = latents.chains[rng.integers(0, CHAINS, size=b)]
        gain_tilt = rng.standard_normal((b, 2)).astype(np.float32)
        chain += gain_tilt @ latents.nuisance[CHAINS:]
        mean = latents.mean[who] * informative
        mean += np.float32(TRACK_OFFSET) * rng.standard_normal((b, FEATURE_DIM), dtype=np.float32)
        mean += np.float32(CHAIN) * chain
        directions = (latents.mix[who] @ latents.atoms) * informative  # (b, RANK, d)
        w = _dynamics(rng, latents.rho[who], steps[start:stop])
        z = rng.standard_normal((b, FEATURE_DIM, MAX_STEPS), dtype=np.float32)
        if FRAME_NOISE != 1.0:
            z *= np.float32(FRAME_NOISE)
        z += mean[:, :, None]
        z += np.float32(DYNAMICS) * np.einsum("bkd,bkt->bdt", directions, w)
        z *= scale[None, :, None]
        z += offset[None, :, None]
        for j in range(b):
            i = start + j
            p = out / rel[i]
            np.save(p, np.ascontiguousarray(z[j, :, : steps[i]]))
            written.append(p)

    return SynthSummary(files=len(written), clips=n_all, classes=artists, bytes=tree_size(written))


def planted_path(raw_dir: str | Path) -> Path:
    """The generator's truth file beside a synthetic release (``OUT/_planted/``); one error line when
    ``raw_dir`` has none (a cheap check made before any scoring)."""
    return planted_file(raw_dir, PLANTED, "yandex")


def read_planted(raw_dir: str | Path) -> dict[str, np.ndarray]:
    """The generator's truth written beside a synthetic release, as arrays (:func:`planted_path`)."""
    return read_npz(planted_path(raw_dir))


def oracle_profiles(raw_dir: str | Path, frames: Iterable[np.ndarray], track_ids: np.ndarray) -> np.ndarray:
    """(n, A) artist profiles of tracks from an oracle that knows the generator's parameters: for each
    of the A true artists of ``track_ids`` (whose (T, 512) ``frames`` are given one track at a time, so
    only one is in memory; the cost is tracks x A x T x 512: meant for synthetic sizes), how well the track
    fits its planted mean (cosine after removing the recording-chain subspace) and its planted dynamics
    (energy of the de-meaned frames along the artist's directions), each standardised over the A
    artists and summed. Ranking tracks by the cosine of their profiles is the ceiling row: it reads
    the same frames as the model, with the truth instead of a learned encoder."""
    p = read_planted(raw_dir)
    where = {int(t): i for i, t in enumerate(p["track_ids"])}
    try:
        rows = np.array([where[int(t)] for t in track_ids])
    except KeyError as e:
        raise FstoreError(f"{raw_dir}: track {e.args[0]} is not in the planted truth (another synth?)") from None
    candidates = np.unique(p["track_artist"][rows])
    q, _ = np.linalg.qr(p["nuisance"].T.astype(np.float64))  # (d, CHAINS + 2) orthonormal
    means = p["mean"][candidates].astype(np.float64)
    means -= (means @ q) @ q.T
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    directions = p["mix"][candidates].astype(np.float64) @ p["atoms"]  # (A, RANK, d)
    out = np.zeros((len(rows), candidates.size), dtype=np.float32)
    mean_fit, dyn_fit = np.empty_like(out), np.empty_like(out)
    for i, x in enumerate(frames):
        z = (np.asarray(x, np.float64) - p["offset"]) / p["scale"]  # (T, d)
        m = z.mean(0)
        m -= (m @ q) @ q.T
        mean_fit[i] = means @ m / max(np.linalg.norm(m), 1e-12)
        proj = np.einsum("akd,td->atk", directions, z - z.mean(0))
        dyn_fit[i] = (proj**2).sum(-1).mean(-1)
    for fit in (mean_fit, dyn_fit):
        out += (fit - fit.mean(1, keepdims=True)) / fit.std(1, keepdims=True).clip(min=1e-12)
    return out
