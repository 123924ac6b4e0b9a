"""Which raw files an MSSD release has, and their sha256 computed on a background thread.

Kept free of heavy imports (no numpy, polars or zarr) so that ``fstore ingest spotify`` can start
hashing the raw files before it imports the ingest machinery: the ~0.4 s of imports run on one core
while the hash (about 1.6 GB/s here, and GIL-free) runs on another, and the hash then keeps ahead of
the parse. The manifest's source checksums are thereby off the critical path.
"""

from __future__ import annotations

import hashlib
import os
import queue
import sys
import threading
from concurrent.futures import Future
from pathlib import Path

from ..store.errors import InputError

_BLOCK = 1 << 20  # bytes read per hash update: large enough that hashlib releases the GIL


def _glob(folder: Path, pattern: str) -> list[Path]:
    return sorted(p for p in folder.glob(pattern) if p.name.endswith((".csv", ".csv.gz")))


def discover(raw_dir: Path) -> dict[str, list]:
    """{"train": logs, "tracks": track feature files, "test": [(prehistory, input, ground truth or None)]}."""
    if not raw_dir.is_dir():
        raise InputError(raw_dir, "raw directory not found")
    train = _glob(raw_dir / "training_set", "log_*")
    tracks = _glob(raw_dir / "track_features", "tf_*")
    if not train:
        raise InputError(raw_dir / "training_set", "no log_*.csv[.gz] files")
    if not tracks:
        raise InputError(raw_dir / "track_features", "no tf_*.csv[.gz] files")
    test = []
    for pre in _glob(raw_dir / "test_set", "log_prehistory_*"):
        key = pre.name.removeprefix("log_prehistory_")
        inp = pre.with_name("log_input_" + key)
        if not inp.is_file():
            raise InputError(pre, f"no matching {inp.name}")
        gt = pre.with_name("ground_truth_" + key)
        test.append((pre, inp, gt if gt.is_file() else None))
    return {"train": train, "tracks": tracks, "test": test}


def all_files(files: dict[str, list]) -> list[Path]:
    """Every file of ``discover``'s answer, in the order the ingest reads them."""
    return files["tracks"] + files["train"] + [p for t in files["test"] for p in t if p is not None]


def _lowest_priority() -> None:
    """This thread yields its core to the parse and encode threads: the checksums are needed only at
    commit, so they use the CPU time the ingest leaves idle (the imports, the tail). Linux sets a
    nice value per thread; elsewhere the thread keeps its priority."""
    if not sys.platform.startswith("linux"):  # elsewhere a thread id is not a process id
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except OSError:
        pass


class SourceHashes:
    """sha256 of each file as stored, hashed in order on one daemon thread from construction on.

    ``digest(path)`` waits for that file's hash. ``close`` stops the thread between two blocks (a failed
    ingest does not wait for the rest of a large release to be hashed). A file that cannot be read gives
    no digest here (None): the ingest's own read of it reports the problem in its one-line form.
    """

    def __init__(self, paths: list[Path]):
        self._futures: dict[Path, Future] = {p: Future() for p in paths}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fstore-source-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        _lowest_priority()
        for path, future in self._futures.items():
            if self._stop.is_set():
                future.cancel()
                continue
            try:
                h, buf = hashlib.sha256(), bytearray(_BLOCK)
                view = memoryview(buf)
                with open(path, "rb") as f:
                    while n := f.readinto(buf):
                        h.update(view[:n])
                        if self._stop.is_set():
                            raise InterruptedError
                future.set_result(h.hexdigest())
            except (OSError, InterruptedError):
                future.set_result(None)

    def digest(self, path: Path) -> str | None:
        future = self._futures.get(path)
        return None if future is None or future.cancelled() else future.result()

    def digests(self) -> dict[Path, str]:
        """Every file's sha256 (waits for the last one); files that could not be read are left out."""
        out = {p: self.digest(p) for p in self._futures}
        return {p: d for p, d in out.items() if d is not None}

    def close(self) -> None:
        self._stop.set()


class ParseAhead:
    """The release's CSV files parsed in order on one background thread, ahead of their consumer.

    Started by the command line before it imports the ingest machinery, the parse of the track files
    and of the first logs overlaps those imports and the track table's encoding; then it keeps ahead
    of the encoder. Track files are parsed whole (``next(path)``); log files in batches of whole
    sessions (``batches(path)``, ``ingest/log_batches.py``), at most ``ahead`` batches queued beside
    the one being parsed and the one being encoded, so memory is bounded whatever the size of a file.

    Errors (``InputError`` with file and line) are raised by ``next`` or ``batches`` where a serial read
    would meet them, in file order. Log files are parsed against
    ``schemas.mssd.log_parse_schema(self.vocabularies)``: the consumer publishes its vocabularies after
    each batch (a few batches late at worst; a value outside the Enum only means a text column).
    """

    def __init__(self, tracks: list[Path], logs: list[Path], ahead: int = 2, block_bytes: int | None = None):
        # polars is imported here, by the caller, before the thread starts: the thread then parses at
        # once (GIL-free) while the caller imports the rest, instead of both importing at once
        from ..schemas import mssd
        from . import log_batches
        self._schemas, self._read, self._batches = mssd, log_batches.read_in_blocks, log_batches.session_batches
        self._block_bytes = block_bytes  # None: log_batches.BLOCK_BYTES
        self.vocabularies: dict[str, list[str]] = {}
        self._tracks, self._logs = list(tracks), list(logs)
        self._ready: dict[Path, Future] = {p: Future() for p in self._tracks}
        self._queue: queue.Queue = queue.Queue(maxsize=ahead)  # log batches (or the error), in order
        self._taken_tracks = self._taken_logs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fstore-parse-ahead", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        S = self._schemas  # noqa: N806 - the schema module's usual name
        for path in self._tracks:
            if self._stop.is_set():
                return
            future = self._ready[path]
            try:
                future.set_result(self._read(path, S.TRACK_CSV))
            except BaseException as e:  # noqa: BLE001 - handed to the consumer, who raises it in file order
                future.set_exception(e)
                return
        try:
            for path in self._logs:
                for batch in self._batches(path, lambda: S.log_parse_schema(self.vocabularies), self._block_bytes):
                    if not self._put(batch):
                        return
        except BaseException as e:  # noqa: BLE001 - raised by ``batches`` in the consumer's thread
            self._put(e)

    def _put(self, item) -> bool:
        """Queue ``item`` once there is room; False when closed meanwhile."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def next(self, path: Path):
        """The parsed frame of track file ``path`` (the files are taken in the order given)."""
        expected = self._tracks[self._taken_tracks] if self._taken_tracks < len(self._tracks) else None
        if path != expected:
            raise ValueError(f"ParseAhead: asked for {path}, next is {expected}")
        self._taken_tracks += 1
        return self._ready.pop(path).result()  # not kept here: a frame lives only as long as its consumer's use

    def batches(self, path: Path):
        """The ``log_batches.Batch``es of log file ``path``, in order (the logs are taken in the order given)."""
        expected = self._logs[self._taken_logs] if self._taken_logs < len(self._logs) else None
        if path != expected:
            raise ValueError(f"ParseAhead: asked for {path}, next is {expected}")
        self._taken_logs += 1
        return self._drain(path)

    def _drain(self, path: Path):
        while True:
            item = self._queue.get()
            if isinstance(item, BaseException):
                raise item
            if item.path != path:
                raise ValueError(f"ParseAhead: a batch of {item.path} while reading {path}")
            yield item
            if item.last:
                return

    def close(self) -> None:
        """Stop parsing (after the block in progress) and let the thread end."""
        self._stop.set()
