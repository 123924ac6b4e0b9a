"""Clip ingests (Yandex, FSD, speakers) on a Dask cluster: the feature files are loaded by tasks.

What is distributed is ``ClipSource.load`` (reading and validating a feature file; for FSD decoding a
wav and computing its log-mel, the heaviest work per byte): one task per batch of clips writes the
float frames of its clips to a scratch space (``parts.Parts``), and the driver feeds them, in
clip order, to the same ``ingest_clips`` code as a local ingest (quantizer fitting, encoding, one
commit). The store is therefore identical whatever the number of workers. Only the source adapter
(scattered once, worker to worker) and file names travel through Dask; frames go through the scratch
space: a folder beside a local store (visible to the workers at the same path), the temporary folder
for an S3 store on a LocalCluster, and the store's ``_fstore/staging/<token>/`` objects for an S3
store with ``--scheduler`` (nothing shared but the raw files).

What a loader converted (``ClipSource.load_counted``: plain counts per clip) comes back with the
frame file names, so the summary reports the same counts as a local ingest.

Bad input in a task comes back as the same one-line error as a local ingest; the remaining tasks are
told to stop (an abort flag), the running ones are waited for, and nothing is committed.
Memory and scratch space are bounded: at most ``window`` batches are loaded ahead of the writer, and
each batch's files are removed once written.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import secrets
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ..store.errors import InputError
from .distributed import RemoteInputError, dask_client
from .parts import Parts

BATCH_CLIPS = 16  # clips a task: a few seconds of FSD log-mel work, small beside the task overhead
_LOADER: contextvars.ContextVar = contextvars.ContextVar("fstore_clip_loader", default=None)


def current_loader() -> DaskClipLoader | None:
    """The loader ``ingest_clips`` uses instead of its threads, inside ``with clip_loader(...)``."""
    return _LOADER.get()


def load_batch(source, clips: list, parts: Parts, batch: str, method: str = "load") -> dict | None:
    """Load ``clips`` through ``source.<method>`` (``load``, or ``load_counted``: frames and counts) and
    put each one's frames as ``.npy`` into ``parts`` under ``batch/``; returns ``{"names": [...],
    "counts": [...]}`` in clip order (counts None for ``load``), ``{"error": ...}`` for bad input, or None
    after an abort."""
    if parts.aborted():
        return None
    names, counts = [], []
    load = getattr(source, method)
    for k, clip in enumerate(clips):
        try:
            loaded = load(clip)
        except InputError as e:
            return {"error": (str(e), str(e.path), e.line, e.column)}
        frames, count = loaded if isinstance(loaded, tuple) else (loaded, None)
        buf = io.BytesIO()
        np.save(buf, frames)
        names.append(f"{batch}/{k:05d}.npy")
        counts.append(count)
        parts.put(names[-1], buf.getvalue())
    return {"names": names, "counts": counts}


class DaskClipLoader:
    """``loader(source.load, clips)`` -> frames in clip order, loaded by tasks on ``client`` (with
    ``source.load_counted``: (frames, counts) pairs); the shape of ``ordered_map`` that ``ingest_clips``
    takes as its ``mapper``."""

    def __init__(self, client, parts: Parts, batch: int = BATCH_CLIPS, window: int | None = None):
        self.client, self.parts, self.batch = client, parts, batch
        self.window = window or 2 * max(1, len(client.scheduler_info()["workers"]))
        self._source_future = None
        self._source = None
        self._calls = 0

    def __call__(self, load: Callable, clips: list) -> Iterator[np.ndarray]:
        source = load.__self__  # the adapter whose bound ``load`` (or ``load_counted``) is mapped
        if source is not self._source:  # sent once to every worker, not with each task
            self._source, self._source_future = source, self.client.scatter(source, broadcast=True)
        self._calls += 1
        batches = [clips[i : i + self.batch] for i in range(0, len(clips), self.batch)]
        pending: deque = deque()
        submitted = []
        try:
            for i, batch in enumerate(batches):
                name = f"{self._calls:03d}-{i:06d}"
                fut = self.client.submit(load_batch, self._source_future, batch, self.parts, name, load.__name__,
                                         pure=False)
                pending.append(fut)
                submitted.append(fut)
                if len(pending) >= self.window:
                    yield from self._take(pending.popleft())
            while pending:
                yield from self._take(pending.popleft())
        except BaseException:
            from distributed import wait

            self.parts.abort()  # tasks not yet started return at once; wait for the running ones
            wait(submitted)
            raise

    def _take(self, fut) -> Iterator:
        done = fut.result()
        if "error" in done:
            raise RemoteInputError(*done["error"])
        for name, count in zip(done["names"], done["counts"], strict=True):
            frames = np.load(io.BytesIO(self.parts.get(name)))
            yield frames if count is None else (frames, count)
        self.parts.remove(done["names"])  # scratch is bounded by the window


@contextlib.contextmanager
def clip_loader(store_path: str | Path, workers: int = 0, scheduler: str | None = None) -> Iterator:
    """Inside the block, ``ingest_clips`` loads clips with a ``DaskClipLoader`` on a LocalCluster of
    ``workers`` processes or on ``scheduler`` (scratch beside a local store, in the temporary folder or,
    with ``scheduler``, under the staging prefix of an S3 store; removed at the end); a no-op when
    neither is asked for."""
    from ..store.remote import S3Store, as_url, is_remote

    with dask_client(workers, scheduler) as client:
        if client is None:
            yield None
            return
        if is_remote(store_path) and scheduler:
            token = f"clips-{int(time.time())}-{secrets.token_hex(4)}"
            parts = Parts(f"staging/{token}", True, S3Store(as_url(store_path)).url)
        else:
            parent = None if is_remote(store_path) else Path(store_path).absolute().parent
            if parent is not None:
                parent.mkdir(parents=True, exist_ok=True)
            parts = Parts(tempfile.mkdtemp(prefix=".fstore-clips-", dir=parent), False)
        token = _LOADER.set(DaskClipLoader(client, parts))
        try:
            yield _LOADER.get()
        finally:
            _LOADER.reset(token)
            parts.clear()
