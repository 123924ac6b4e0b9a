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

    x[t, b] = tilt[b] + 0.5 * S[s, b] + 0.6 * U[utt, b] + e[t] + 0.8 * n[t, b]

- ``tilt``: a shared log-mel spectral tilt (about +2 at low bands down to about -4 at high bands),
- ``S``: the speaker's mean-spectrum deviation, standard normal smoothed across bands (RMS kept at 1),
- ``U``: an utterance (channel) offset, standard normal,
- ``e``: a frame-energy envelope shared by all bands (syllable-rate modulation plus silences),
- ``n``: i.i.d. standard normal frame noise.

Utterance lengths ``mel_len`` are uniform in 150..900 frames. The mean over time of an utterance is
``tilt + 0.5 S + 0.6 U + mean(e)``, so a nearest-centroid rule on time-averaged
features identifies the speaker far above chance.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from featurestore.schemas import speakers as S
from featurestore.synth.audio_common import SynthSummary, hex_ids, prepare_out_dir, tree_size

__all__ = ["synth_speakers", "N_MELS", "MIN_MEL_LEN", "MAX_MEL_LEN"]

N_MELS = S.N_MELS
MIN_MEL_LEN = S.MIN_MEL_LEN
MAX_MEL_LEN = S.MAX_MEL_LEN

_SPEAKER_SCALE = 0.5
_UTT_OFFSET = 0.6
_FRAME_NOISE = 0.8
_BATCH = 64


def _smooth_bands(x: np.ndarray, width: int = 3) -> np.ndarray:
    """Moving average along the last axis (edge-padded), keeping the RMS of the input."""
    pad = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(width, width)], mode="edge")
    c = np.cumsum(pad, axis=-1)
    c = np.concatenate([np.zeros_like(c[..., :1]), c], axis=-1)
    y = (c[..., 2 * width + 1 :] - c[..., : -2 * width - 1]) / (2 * width + 1)
    return y * (x.std() / max(float(y.std()), 1e-12))


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

    written: list[Path] = []
    t_axis = np.arange(MAX_MEL_LEN, dtype=np.float32)
    for start in range(0, n_all, _BATCH):
        stop = min(start + _BATCH, n_all)
        b = stop - start
        base = spk_mean[speaker_of[start:stop]]
        base = base + np.float32(_UTT_OFFSET) * rng.standard_normal((b, N_MELS), dtype=np.float32)
        rate = rng.uniform(0.03, 0.09, size=(b, 1)).astype(np.float32) * np.float32(2 * np.pi)
        phase = rng.uniform(0, 2 * np.pi, size=(b, 1)).astype(np.float32)
        energy = np.float32(0.8) * np.sin(rate * t_axis + phase)
        silence = rng.random((b, MAX_MEL_LEN), dtype=np.float32) < np.float32(0.05)
        energy[silence] -= np.float32(3.0)
        x = np.float32(_FRAME_NOISE) * rng.standard_normal((b, MAX_MEL_LEN, N_MELS), dtype=np.float32)
        x += base[:, None, :]
        x += energy[:, :, None]
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
