"""``fstore bench loader`` on a Melon store: ``PlaylistBatches`` vs the seed's per-item multi-hot Dataset.

Same store, same vocabulary, same playlists in the same order, one process:
1. fstore ``PlaylistBatches`` (numba-filled padded index lists), alone and followed by the multi-hot
   scatter the loss does (on the CPU here: the full cost of the same dense targets);
2. the baseline (what the seed did in TF): a map-style ``Dataset`` whose ``__getitem__`` builds dense
   float32 multi-hot vectors of one playlist's input songs, tags, artists and target songs, tags and
   artists, collated by ``DataLoader(num_workers=2)``.
The first batch of each is checked equal (index lists scattered vs the dense vectors).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from featurestore.store import Store
from loaders.playlists import PlaylistBatches, multi_hot

from .common import timed

_KEYS = ("songs", "tags", "artists", "tgt_songs", "tgt_tags", "tgt_artists")


class PerItemMultiHot(torch.utils.data.Dataset):
    """One playlist per ``__getitem__`` as dense multi-hot vectors over the loader's vocabulary."""

    def __init__(self, loader: PlaylistBatches):
        self.inputs, self.targets = loader.inputs, loader.targets
        self.table = loader.vocab["song_artists"]
        self.n = (loader.vocab.n_songs, loader.vocab.n_tags, loader.vocab.n_artists)
        self.caps = (loader.width["songs"], loader.width["tags"], loader.max_artists)

    def __len__(self) -> int:
        return self.inputs[0][0].size - 1

    def _hot(self, ids: np.ndarray, n: int) -> np.ndarray:
        v = np.zeros(n, np.float32)
        v[ids] = 1.0
        return v

    def __getitem__(self, r: int) -> dict:
        (so, s), (to, t) = self.inputs
        (tso, ts), (tto, tt) = self.targets
        songs, tags = s[so[r]:so[r + 1]][: self.caps[0]], t[to[r]:to[r + 1]][: self.caps[1]]
        artists = self.table[songs].ravel()
        artists = artists[artists >= 0][: self.caps[2]]
        tsongs = ts[tso[r]:tso[r + 1]]
        tart = self.table[tsongs].ravel()
        return {"row": r, "songs": self._hot(songs, self.n[0]), "tags": self._hot(tags, self.n[1]),
                "artists": self._hot(artists, self.n[2]), "tgt_songs": self._hot(tsongs, self.n[0]),
                "tgt_tags": self._hot(tt[tto[r]:tto[r + 1]], self.n[1]), "tgt_artists": self._hot(tart[tart >= 0], self.n[2])}


def _dense(b: dict, n: tuple[int, int, int]) -> dict:
    sizes = dict(zip(_KEYS, n * 2, strict=True))
    return {"row": b["row"], **{k: multi_hot(b[k], sizes[k]) for k in _KEYS}}


def run(store_path: Path, batch_size: int = 256, epochs: int = 3, baseline_playlists: int = 4096) -> list[str]:
    store = Store(store_path)
    fs = PlaylistBatches(store, "train", batch_size, order="random", seed=0)
    n_items = int(fs.items.size)
    n = (fs.vocab.n_songs, fs.vocab.n_tags, fs.vocab.n_artists)
    lines = [f"playlist loader benchmark: {store_path}, split train ({n_items} playlists), batch {batch_size}, "
             f"vocab {n[0]} songs / {n[1]} tags / {n[2]} artists"]
    for _ in fs:  # warm: compile kernels
        pass
    order = np.concatenate(fs.epoch_batches(0))
    ds = PerItemMultiHot(fs)
    dl = torch.utils.data.DataLoader(ds, batch_size=batch_size, sampler=order.tolist(), num_workers=2)
    first_fs, first_dl = _dense(next(iter(fs)), n), next(iter(dl))
    same = all(torch.equal(first_fs[k], first_dl[k]) for k in first_fs)
    lines.append(f"  first batch identical (fstore index lists scattered == baseline dense vectors): {same}")

    def epochs_of(make):
        def it():
            for e in range(epochs):
                fs.set_epoch(e + 1)
                yield from make()
        return it

    rows = lambda b: b["row"].shape[0]  # noqa: E731
    results = {"fstore PlaylistBatches": timed(epochs_of(lambda: iter(fs)), epochs * n_items, rows),
               "fstore + multi-hot scatter": timed(epochs_of(lambda: (_dense(b, n) for b in fs)), epochs * n_items, rows),
               "baseline Dataset+DataLoader(2)": timed(lambda: iter(dl), min(baseline_playlists, n_items), rows)}
    for name, (dt, count, _, peak) in results.items():
        lines.append(f"  {name:<34}{count / dt:>12,.0f} playlists/s   peak RSS {peak:,.0f} MB")
    rate = {k: v[1] / v[0] for k, v in results.items()}
    base = rate["baseline Dataset+DataLoader(2)"]
    lines.append(f"  fstore / baseline                 {rate['fstore PlaylistBatches'] / base:8.1f}x")
    lines.append(f"  fstore + scatter / baseline       {rate['fstore + multi-hot scatter'] / base:8.1f}x")
    return lines
