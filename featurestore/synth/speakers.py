"""Synthetic speaker-classification data (VoxCeleb subset as 40-band log-mel features) in the homework format.

Layout written under ``out_dir`` (DATASETS.md section 5)::

    Dataset/mapping.json     {"speaker2id": {"id10473": 0, ...}, "id2speaker": {"0": "id10473", ...}}
    Dataset/metadata.json    {"n_mels": 40, "speakers": {"id10473": [{"feature_path": "uttr-<32 hex>.pt",
                              "mel_len": 702}, ...], ...}}
    Dataset/testdata.json    {"n_mels": 40, "utterances": [{"feature_path": "uttr-<32 hex>.pt", "mel_len": 676}, ...]}
    Dataset/uttr-<32 hex>.pt torch.save of a float32 tensor of shape (mel_len, 40)
    Dataset/test_labels.json {"uttr-<32 hex>.pt": "id10473", ...}

``test_labels.json`` is **not** part of the real homework (its test labels were withheld); it is written
so that a test-set prediction can be scored locally. Speaker ids are VoxCeleb-style ``id1xxxx`` strings,
ids in ``mapping.json`` follow sorted speaker order, and the 32-hex utterance ids come from the seeded
generator (no uuid4), so a fixed seed reproduces the same files. Test utterances come from the same
(closed) set of speakers, spread uniformly over them.

Planted structure, per utterance of speaker ``s`` (``t`` a frame, ``b`` a mel band)::

    x[t, b] = tilt[b] + 0.5 * S[s, b]                                    speaker timbre (mean spectrum)
            + g + c * (b / 39 - 1/2) - L[b] + 0.3 * U[b]                 recording channel / session
            + sum_k 0.35 * P[s, k, b] * z_k[t]                           speaker dynamics (band co-variation)
            + 0.5 * Q[b] * w[t]                                          session's moving noise source
            + e[t] + 0.8 * n[t, b]                                       speaking rhythm, frame noise

- ``tilt``: a shared log-mel spectral tilt (about +2 at low bands down to about -4 at high bands);
- ``S``: the speaker's mean-spectrum deviation, standard normal smoothed across bands (RMS 1);
- channel, drawn per utterance and independent of the speaker, as real recording sessions shift each
  utterance's average spectrum: a gain ``g ~ N(0, 0.4)``, a spectral tilt ``c ~ N(0, 0.8)`` (end-to-end
  log-mel difference), for half of the utterances a band-limited microphone ``L[b] = 2 sigmoid((b - k)
  / 1.5)`` (cut-off band ``k`` uniform in 18..36), and a smoothed residual colouring ``U`` (RMS 1);
- ``P[s, k]`` (``k`` < 3): smooth band patterns (RMS 1, "formant" shapes), each a shape shared by all
  speakers plus 0.5 times the speaker's own (speakers' formant structure is alike, not disjoint), driven by
  latent trajectories ``z_k`` that are AR(1) processes with speaker-specific smoothness (coefficient
  0.55..0.95: fast or slow formant / pitch movement), scaled to unit variance and **centred on the
  utterance** (time mean exactly 0). They move the frames' covariance across bands and their temporal
  correlation, and nothing of them survives a time average;
- ``Q``, ``w``: the same kind of pattern and trajectory, drawn per utterance (a background source or
  reverberation that moves with time): band co-variation that does not identify the speaker, so that
  a covariance is not a give-away either;
- ``e``: a frame-energy envelope shared by all bands: syllable-rate modulation at a speaker-specific
  speaking rate (0.03..0.09 cycles per frame, +-8 % per utterance), plus 5 % silent frames (-3);
- ``n``: i.i.d. standard normal frame noise.

Why: on real speech a time average of the mels is confounded by the channel (the homework's strong
models score 0.6-0.88), and speaker identity also lives in frame dynamics. Here the time mean of an
utterance is ``tilt + 0.5 S + channel + mean(e)``: a nearest-centroid rule on mean-pooled mels stays
well above chance (the speaker mean is still planted) but the channel costs it accuracy, while a model
that looks at frames can also use the band co-variation (``P``), its time scale and the rhythm, which a
mean discards. Utterance lengths ``mel_len`` are uniform in 150..900 frames. Every draw comes from one
``numpy.random.default_rng(seed)``, so a seed reproduces the same files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from featurestore.schemas import speakers as S
from featurestore.store.folders import prepare_out_dir
from featurestore.synth.audio_common import SynthSummary, hex_ids, tree_size

__all__ = ["synth_speakers", "N_MELS", "MIN_MEL_LEN", "MAX_MEL_LEN"]

N_MELS = S.N_MELS
MIN_MEL_LEN = S.MIN_MEL_LEN
MAX_MEL_LEN = S.MAX_MEL_LEN

_SPEAKER_SCALE = 0.5
_GAIN = 0.4
_CHANNEL_TILT = 0.8
_BAND_LIMITED = 0.5  # share of utterances recorded with a band-limited microphone
_BAND_LIMIT_DEPTH = 2.0
_UTT_COLOUR = 0.3
_PATTERNS = 3
_PATTERN_SCALE = 0.35
_PATTERN_OWN = 0.5  # a speaker's own part of a pattern, beside the shape all speakers share
_NUISANCE_SCALE = 0.5
_FRAME_NOISE = 0.8
_RATE_JITTER = 0.08
_BATCH = 64


def _smooth_bands(x: np.ndarray, width: int = 3) -> np.ndarray:
    """Moving average along the last axis (edge-padded), keeping the RMS of the input."""
    pad = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(width, width)], mode="edge")
    c = np.cumsum(pad, axis=-1)
    c = np.concatenate([np.zeros_like(c[..., :1]), c], axis=-1)
    y = (c[..., 2 * width + 1 :] - c[..., : -2 * width - 1]) / (2 * width + 1)
    return y * (x.std() / max(float(y.std()), 1e-12))


def _channel(rng: np.random.Generator, n: int, bands: np.ndarray) -> np.ndarray:
    """Per-utterance recording channel (n, N_MELS): gain, spectral tilt, band limit, residual colouring."""
    gain = _GAIN * rng.standard_normal((n, 1))
    slope = _CHANNEL_TILT * rng.standard_normal((n, 1)) * (bands / (N_MELS - 1) - 0.5)
    cutoff = rng.uniform(18, 36, size=(n, 1))
    limited = rng.random((n, 1)) < _BAND_LIMITED
    rolloff = limited * _BAND_LIMIT_DEPTH / (1 + np.exp(-(bands - cutoff) / 1.5))
    colour = _UTT_COLOUR * _smooth_bands(rng.standard_normal((n, N_MELS)), 3)
    return (gain + slope - rolloff + colour).astype(np.float32)


def _trajectories(rng: np.random.Generator, smoothness: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """AR(1) latent trajectories (n, MAX_MEL_LEN, K) with per-row coefficients ``smoothness`` (n, K),
    unit stationary variance, centred on each utterance's own ``lens`` frames (frames past it are unused)."""
    n, k = smoothness.shape
    drive = rng.standard_normal((n, MAX_MEL_LEN, k)).astype(np.float32) * np.sqrt(1 - smoothness**2)[:, None, :]
    z = np.empty_like(drive)
    z[:, 0] = rng.standard_normal((n, k)).astype(np.float32)
    for t in range(1, MAX_MEL_LEN):
        z[:, t] = smoothness * z[:, t - 1] + drive[:, t]
    real = np.arange(MAX_MEL_LEN)[None, :, None] < lens[:, None, None]
    z -= (z * real).sum(1, keepdims=True) / lens[:, None, None]
    return z


def synth_speakers(
    out_dir: str | Path,
    speakers: int = 40,
    utterances_per_speaker: int = 20,
    test_utterances: int = 100,
    seed: int = 0,
    overwrite: bool = False,
) -> SynthSummary:
    """Write a synthetic speaker-classification data set under ``out_dir / "Dataset"``.

    Returns a :class:`SynthSummary` (clips = labelled + test utterances, classes = speakers).
    """
    if speakers < 1 or utterances_per_speaker < 0 or test_utterances < 0:
        raise ValueError("need speakers >= 1 and non-negative utterance counts")
    root = prepare_out_dir(out_dir, overwrite) / S.DATASET_DIR
    root.mkdir()
    rng = np.random.default_rng(seed)

    id_space = max(1251, 2 * speakers)
    names = sorted(f"id{10001 + i}" for i in rng.choice(id_space, size=speakers, replace=False).tolist())
    n_train = speakers * utterances_per_speaker
    n_all = n_train + test_utterances
    utt_ids = [f"uttr-{h}.pt" for h in hex_ids(rng, n_all, 32)]
    speaker_of = np.concatenate(
        [
            np.repeat(np.arange(speakers), utterances_per_speaker),
            rng.permutation(np.arange(test_utterances) % speakers),
        ]
    )
    mel_len = rng.integers(MIN_MEL_LEN, MAX_MEL_LEN + 1, size=n_all)

    bands = np.arange(N_MELS, dtype=np.float32)
    tilt = (2.0 - 6.0 * (bands / (N_MELS - 1)) ** 0.8).astype(np.float32)
    spk_mean = tilt + np.float32(_SPEAKER_SCALE) * _smooth_bands(
        rng.standard_normal((speakers, N_MELS)).astype(np.float32), 2
    ).astype(np.float32)
    # speaker dynamics: band patterns, the smoothness of their trajectories, the speaking rate
    shared = _smooth_bands(rng.standard_normal((1, _PATTERNS, N_MELS)).astype(np.float32), 2)
    own = _smooth_bands(rng.standard_normal((speakers, _PATTERNS, N_MELS)).astype(np.float32), 2)
    patterns = (shared + np.float32(_PATTERN_OWN) * own).reshape(speakers * _PATTERNS, N_MELS)
    patterns = (patterns / np.sqrt((patterns**2).mean(1, keepdims=True))).reshape(speakers, _PATTERNS, N_MELS)
    smoothness = rng.uniform(0.55, 0.95, size=(speakers, _PATTERNS)).astype(np.float32)
    speaking_rate = rng.uniform(0.03, 0.09, size=speakers).astype(np.float32)

    written: list[Path] = []
    t_axis = np.arange(MAX_MEL_LEN, dtype=np.float32)
    for start in range(0, n_all, _BATCH):
        stop = min(start + _BATCH, n_all)
        b = stop - start
        spk = speaker_of[start:stop]
        lens = mel_len[start:stop]
        base = spk_mean[spk] + _channel(rng, b, bands)

        rate = speaking_rate[spk, None] * rng.uniform(1 - _RATE_JITTER, 1 + _RATE_JITTER, size=(b, 1))
        phase = rng.uniform(0, 2 * np.pi, size=(b, 1))
        energy = (0.8 * np.sin(2 * np.pi * rate * t_axis + phase)).astype(np.float32)
        silence = rng.random((b, MAX_MEL_LEN), dtype=np.float32) < np.float32(0.05)
        energy[silence] -= np.float32(3.0)

        z = _trajectories(rng, smoothness[spk], lens)  # (b, T, K), zero time mean over each utterance
        x = np.float32(_FRAME_NOISE) * rng.standard_normal((b, MAX_MEL_LEN, N_MELS), dtype=np.float32)
        x += base[:, None, :]
        x += energy[:, :, None]
        x += np.float32(_PATTERN_SCALE) * np.einsum("btk,bkm->btm", z, patterns[spk])
        # a session's own moving source (background noise, reverberation) co-varies bands too
        nuisance = _smooth_bands(rng.standard_normal((b, 1, N_MELS)).astype(np.float32), 2)
        nuisance /= np.sqrt((nuisance**2).mean(-1, keepdims=True))
        w = _trajectories(rng, rng.uniform(0.55, 0.95, size=(b, 1)).astype(np.float32), lens)
        x += np.float32(_NUISANCE_SCALE) * w * nuisance
        for j in range(b):
            i = start + j
            p = root / utt_ids[i]
            # a contiguous copy: torch.save stores the whole underlying storage of a view
            torch.save(torch.from_numpy(x[j, : mel_len[i]].copy()), p)
            written.append(p)

    speaker2id = {name: k for k, name in enumerate(names)}
    mapping = {"speaker2id": speaker2id, "id2speaker": {str(k): name for k, name in enumerate(names)}}
    per_speaker: dict[str, list[dict[str, object]]] = {name: [] for name in names}
    for i in range(n_train):
        per_speaker[names[speaker_of[i]]].append({"feature_path": utt_ids[i], "mel_len": int(mel_len[i])})
    metadata = {"n_mels": N_MELS, "speakers": per_speaker}
    test_idx = range(n_train, n_all)
    testdata = {
        "n_mels": N_MELS,
        "utterances": [{"feature_path": utt_ids[i], "mel_len": int(mel_len[i])} for i in test_idx],
    }
    test_labels = {utt_ids[i]: names[speaker_of[i]] for i in test_idx}
    for fname, obj in (
        (S.MAPPING, mapping),
        (S.METADATA, metadata),
        (S.TESTDATA, testdata),
        (S.TEST_LABELS, test_labels),
    ):
        p = root / fname
        p.write_text(json.dumps(obj), encoding="utf-8")
        written.append(p)

    return SynthSummary(files=len(written), clips=n_all, classes=speakers, bytes=tree_size(written))
