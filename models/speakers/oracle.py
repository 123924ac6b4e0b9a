"""The ceiling row of ``evaluate speakers``: an oracle that knows the generator's truth.

``fstore synth speakers`` writes its planted parameters to ``RAW/_planted/planted.npz`` (outside the
homework format). For an utterance, the oracle knows its recording offset (channel and voice), the band
pattern, strength and time scale of its session source and its frame-noise level, and for each speaker
the mean spectrum, the band patterns and the AR(1) time scale of each pattern's trajectory. Under that
truth an utterance is a linear Gaussian state-space model per speaker (states: the speaker's latent
trajectories, the session source, the frame-energy envelope as white noise); the oracle scores every
speaker by the log-likelihood of the frames under it (a Kalman filter in information form, all
speakers and a batch of utterances at once) and predicts the best. It knows more than the frames show
(each utterance's nuisance) and models a little less than the generator draws (the speaking rhythm is
treated as noise, the time scales' drift per utterance is ignored): a ceiling for what the planted
signal allows, not the exact Bayes accuracy. The filter's covariances do not depend on the data; they
are iterated for the first ``_SETTLE`` frames and then held (steady state), which keeps a frame's cost
to a few (utterances, speakers, states) products. Memory: one batch of utterances times every speaker.
"""

from __future__ import annotations

import os

import numpy as np

from featurestore.store import Store
from featurestore.store.errors import FstoreError
from featurestore.synth.planted import planted_file, read_npz
from featurestore.synth.speakers import ENERGY_MEAN, ENERGY_VAR, PLANTED

__all__ = ["Planted", "oracle_predict"]

_BATCH = 16  # utterances scored at a time (times every speaker): bounded memory at any split size
_SETTLE = 100  # frames after which the filter's covariances are taken as settled (steady state)


class Planted:
    """The generator's truth of one synthetic release, with a row per utterance feature path."""

    def __init__(self, raw_dir: str | os.PathLike[str]):
        self.arrays = read_npz(planted_file(raw_dir, PLANTED, "speakers"))
        self.row = {str(u): i for i, u in enumerate(self.arrays["utterances"])}

    def rows(self, feature_paths: list[str]) -> np.ndarray:
        missing = [p for p in feature_paths if p not in self.row]
        if missing:
            raise FstoreError(f"utterance {missing[0]} is not in the planted truth: the store was ingested from "
                              "another synthetic release than --raw-dir")
        return np.array([self.row[p] for p in feature_paths], dtype=np.int64)


def _log_likelihoods(frames: list[np.ndarray], rows: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    """(utterances, speakers) log-likelihood of each utterance's frames under each speaker's model."""
    b, s = len(frames), p["speaker_mean"].shape[0]
    k = p["patterns"].shape[1]
    bins = p["speaker_mean"].shape[1]
    d = k + 2
    # observation matrix per (utterance, speaker): speaker patterns, session source, all-band energy
    h = np.empty((b, s, bins, d))
    h[:, :, :, :k] = p["patterns"].transpose(0, 2, 1)[None]
    h[:, :, :, k] = p["source"][rows][:, None, :]
    h[:, :, :, k + 1] = 1.0
    var_noise = p["noise"][rows].astype(np.float64)[:, None] ** 2  # (b, 1)
    jmat = np.einsum("usbi,usbj->usij", h, h) / var_noise[..., None, None]
    coef = np.zeros((b, s, d))
    coef[:, :, :k] = p["smoothness"][None]
    coef[:, :, k] = p["source_smoothness"][rows][:, None]
    stationary = np.ones(d)
    stationary[k + 1] = ENERGY_VAR
    drive = (1 - coef**2) * stationary
    lengths = np.array([f.shape[0] for f in frames])
    x = np.zeros((b, lengths.max(), bins))
    for i, f in enumerate(frames):
        x[i, : f.shape[0]] = f
    centre = p["speaker_mean"][None] + p["offset"][rows][:, None, :] + ENERGY_MEAN  # (b, s, bins)
    # the data enter only through H'y and y'y of the centred frames, computed for every frame at once
    hy = (np.einsum("utb,usbi->usti", x, h) - np.einsum("usb,usbi->usi", centre, h)[:, :, None]) \
        / var_noise[..., None, None]
    yy = ((x * x).sum(-1)[:, None, :] - 2 * np.einsum("utb,usb->ust", x, centre)
          + (centre * centre).sum(-1)[..., None]) / var_noise[..., None]
    total = -0.5 * bins * np.log(2 * np.pi * var_noise) * lengths[:, None] + np.zeros((b, s))
    mean = np.zeros((b, s, d))
    cov = np.broadcast_to(np.diag(stationary), (b, s, d, d)).copy()
    eye = np.eye(d)
    for t in range(lengths.max()):
        if t < _SETTLE:  # the covariances do not depend on the data and settle in a few frames
            precision = np.linalg.inv(cov) + jmat
            post_cov = np.linalg.inv(precision)
            logdet = np.linalg.slogdet(cov)[1] + np.linalg.slogdet(precision)[1]
            cov = coef[..., :, None] * post_cov * coef[..., None, :] + drive[..., None] * eye
        g = hy[:, :, t] - np.einsum("usij,usj->usi", jmat, mean)
        resid = yy[:, :, t] - 2 * (mean * hy[:, :, t]).sum(-1) + np.einsum("usi,usij,usj->us", mean, jmat, mean)
        step = np.einsum("usij,usj->usi", post_cov, g)
        total -= 0.5 * (t < lengths)[:, None] * (logdet + resid - (g * step).sum(-1))
        mean = coef * (mean + step)
    return total


def oracle_predict(store: Store, split: str, clips: np.ndarray, planted: Planted) -> np.ndarray:
    """The oracle's speaker code for each utterance of ``clips`` (in that order), read in bounded batches."""
    fs = store.frames(split)
    ids = store.ids(split)
    rows = planted.rows([str(ids[int(c)]) for c in clips])
    offsets, data = fs.offsets.astype(np.int64), fs.memmap()
    order = np.argsort(offsets[clips + 1] - offsets[clips], kind="stable")  # similar lengths share a batch
    pred = np.empty(clips.size, dtype=np.int64)
    for start in range(0, clips.size, _BATCH):
        part = order[start : start + _BATCH]
        frames = [fs.dequantize(data[offsets[c] : offsets[c + 1]]).astype(np.float64) for c in clips[part]]
        pred[part] = _log_likelihoods(frames, rows[part], planted.arrays).argmax(1)
    return pred
