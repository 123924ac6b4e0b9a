"""The ceiling row of ``fstore evaluate fsd --raw-dir``: a detector that knows every class's planted
event (``featurestore.synth.fsd``'s truth in ``RAW/_planted/``) but not the clip's labels.

Why this and not the planted labels: on the curated validation clips the planted labels are the
listed ones, so their oracle scores 1.0 and says nothing about how much of the labels the audio still
carries after events at random times, background textures, channel and gain. The detector asks the
audio: for each class it renders the class's event (its group's duration at three lengths, a stack at
its region's pitch) through the store's own log-mel transform, and scores a clip by the largest
normalized cross-correlation of that template with any place of the clip's stored frames (every
start; for a stack also every mel shift within the pitch range). It is the matched filter of the
generator's own patterns: a model that reaches it has learned the planted events about as well as
their exact shapes allow; it is not a strict bound (it does not model overlapping events or the
channel), so a model may pass it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from featurestore.ingest.fsd import LogMel
from featurestore.store import Store
from featurestore.store.errors import FstoreError
from featurestore.store.frames import FrameSet
from featurestore.synth.fsd import KINDS, Planted, render_event

__all__ = ["LENGTHS", "template_detector"]

LENGTHS = (0.87, 1.0, 1.15)  # template durations relative to the group's (events vary by +-15 %)
POOL = 2  # frames averaged before matching (10 ms steps: the events' shapes last 0.1 s or more)
FLOOR_DB = 40.0  # a template covers the cells within this many dB of its loudest one
PITCH_SHIFT = 6  # mel bins a stack's template is moved up and down (its pitch varies +-half an octave)


def _templates(planted: Planted, logmel: LogMel, bins: int) -> list[list[tuple[np.ndarray, np.ndarray, int]]]:
    """Per class, per length: (template (bins', frames') zero-mean over its cells, cell mask, first bin)."""
    ev, sr = planted.events, planted.sample_rate
    out = []
    for c in range(len(planted.classes)):
        per = []
        for scale in LENGTHS:
            n = int(round(ev.seconds[c] * scale * sr))
            x = render_event(int(ev.kind[c]), int(ev.member[c]), float(ev.centre_hz[c]), n, sr,
                             np.random.default_rng(c), pitch_octaves=0.0)
            t = _pool(logmel(x.astype(np.float32)).T)  # (bins, frames')
            cells = t >= t.max() - FLOOR_DB
            rows = np.flatnonzero(cells.any(1))
            r0, r1 = int(rows[0]), int(rows[-1]) + 1
            t, cells = t[r0:r1], cells[r0:r1]
            z = np.where(cells, t - t[cells].mean(), 0.0)
            z = z / max(float(np.sqrt((z**2).sum())), 1e-9)
            per.append((z.astype(np.float32), cells.astype(np.float32), r0))
        out.append(per)
    return out


def _pool(x: np.ndarray) -> np.ndarray:
    """Average of every :data:`POOL` frames along the last axis (a partial last step kept)."""
    t = x.shape[-1]
    pad = (-t) % POOL
    if pad:
        x = np.concatenate([x, np.repeat(x[..., -1:], pad, axis=-1)], axis=-1)
    return x.reshape(*x.shape[:-1], -1, POOL).mean(-1)


def _ncc(clip: torch.Tensor, template: torch.Tensor, cells: torch.Tensor) -> float:
    """Largest normalized cross-correlation of ``template`` over ``cells`` with any window of ``clip``
    (both (rows, frames); clip rows >= template rows: every vertical and horizontal placement)."""
    x = clip[None, None]
    w, m = template[None, None], cells[None, None]
    n = float(cells.sum())
    num = F.conv2d(x, w)
    s1, s2 = F.conv2d(x, m), F.conv2d(x * x, m)
    den = torch.sqrt((s2 - s1 * s1 / n).clamp_min(1e-6))
    return float((num / den).max())


@torch.no_grad()
def template_detector(store: Store, fs: FrameSet, clips: np.ndarray, planted: Planted) -> np.ndarray:
    """(len(clips), classes) detector scores of ``clips`` of ``fs`` (class order: the planted names,
    which must be the store's class list)."""
    cfg = fs.meta.get("logmel")
    if cfg is None:
        raise FstoreError(f"{store.path}: frame set 'train' has no log-mel settings (not an `ingest fsd` store)")
    if cfg["sample_rate"] != planted.sample_rate:
        raise FstoreError(f"{store.path}: frames at {cfg['sample_rate']} Hz, the planted truth at "
                          f"{planted.sample_rate} Hz: not the store of this raw folder")
    logmel = LogMel(cfg["sample_rate"], cfg["n_fft"], cfg["hop_length"], cfg["n_mels"])
    templates = _templates(planted, logmel, fs.bins)
    kinds = planted.events.kind
    out = np.zeros((clips.size, len(templates)), dtype=np.float32)
    for row, clip_id in enumerate(clips.tolist()):
        frames = _pool(fs.dequantize(fs.clip(clip_id)).T).astype(np.float32)  # (bins, T')
        for c, per in enumerate(templates):
            shift = PITCH_SHIFT if KINDS[int(kinds[c])] == "stack" else 0
            best = -1.0
            for z, cells, r0 in per:
                lo, hi = r0 - shift, r0 + z.shape[0] + shift
                x = frames[max(0, lo) : min(fs.bins, hi)]
                x = np.pad(x, ((max(0, -lo), max(0, hi - fs.bins)), (0, 0)), mode="edge")
                if x.shape[1] < z.shape[1]:  # a clip shorter than the template: its edge value beyond
                    x = np.pad(x, ((0, 0), (0, z.shape[1] - x.shape[1])), mode="edge")
                best = max(best, _ncc(torch.from_numpy(x), torch.from_numpy(z), torch.from_numpy(cells)))
            out[row, c] = best
    return out
