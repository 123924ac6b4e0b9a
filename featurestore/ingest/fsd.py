"""``fstore ingest fsd``: FSDKaggle2019 wav clips -> log-mel frame sets, clip by clip.

Raw layout (DATASETS.md section 4): ``train_curated.csv`` / ``train_noisy.csv`` (header ``fname,labels``,
labels a comma-separated list, quoted when it holds several), wavs in ``train_curated/`` and
``train_noisy/``, and optionally ``sample_submission.csv`` (``fname`` plus one column per class) with
its wavs in ``test/``.

Features: log-mel frames computed with torchaudio, one clip at a time::

    MelSpectrogram(sample_rate=44100, n_fft=1764, win_length=1764, hop_length=220, n_mels=64,
                   f_min=20, f_max=sample_rate / 2, window=hann, power=2.0, center=True,
                   pad_mode="reflect", norm=None, mel_scale="htk")
    AmplitudeToDB(stype="power", top_db=80)         # 10 log10(max(power, 1e-10)), floor at max - 80 dB

on the wav as float32 in [-1, 1] (multi-channel files are averaged to mono; clips shorter than
n_fft / 2 samples are zero-padded so the reflect padding is defined). A clip of n samples gives
1 + n // hop frames of ``n_mels`` bins, stored as time x n_mels.

Tables written:
- ``train``: frame set (store/frames.py), the curated clips then the noisy ones, in CSV order; per clip
  ``clips/curated`` (uint8, 1 curated / 0 noisy) and the multi-label CSR ``labels`` (event column
  ``class``, int16 codes into ``dicts/class.parquet``, in the order listed).
- ``test``: frame set of the ``sample_submission.csv`` rows when ``test/`` exists (no labels), encoded
  with the train quantizers.
- ``ids/train.parquet``, ``ids/test.parquet``: the fnames.
The class list is the header of ``sample_submission.csv`` when present (then a label outside it is an
error), else the union of the labels in file order (curated first). Quantizers: one affine 8-bit
quantizer per mel bin, fitted on the first ``sample_frames`` frames (64 MB of float32 by default);
values outside that range are clipped and counted (``clipped`` in the table's per-bin errors). With
``two_pass`` the exact per-bin min / max over every clip is added from a first pass, so nothing is
clipped, at the price of computing every log-mel twice (off by default: the mel is the costly part).

Bad input (InputError naming the file, and the line for CSV problems; nothing is committed): missing
CSV, wrong header, malformed CSV line (unterminated quote, wrong number of fields, empty fname or
label, a label listed twice), duplicate fname, unknown label (class list from sample_submission.csv),
missing wav, unreadable or non-WAV file, non-PCM subtype, empty wav, wrong sample rate.
"""

from __future__ import annotations

import contextlib
import csv
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio
import zarr
from tqdm import tqdm

from ..store import Dictionary, InputError, staged_directory, write_manifest
from ..store.frame_writer import FrameWriter, RangeScan
from .frames_common import FrameIngestSummary, refuse_existing, source_entries, write_ids

SPLITS = (("train_curated", True), ("train_noisy", False))
TOP_DB = 80.0
F_MIN = 20.0


def _csv_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line, fields) rows of a CSV file; csv errors become InputError with the line."""
    if not path.is_file():
        raise InputError(path, "file not found")
    rows = []
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.reader(fh, strict=True)
        start = 1
        try:
            header = [h.strip() for h in next(reader, [])]
            if not header:
                raise InputError(path, "file is empty")
            start = reader.line_num + 1
            for row in reader:
                if row:  # blank lines are skipped
                    rows.append((start, row))
                start = reader.line_num + 1
        except csv.Error as e:  # report the line where the broken record starts (e.g. an unclosed quote)
            raise InputError(path, f"malformed CSV record ({e}, at line {reader.line_num})",
                             line=start) from None
    return header, rows


def read_labels(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, fname, labels) of a ``fname,labels`` file."""
    header, rows = _csv_rows(path)
    if header != ["fname", "labels"]:
        raise InputError(path, f"header {header} is not ['fname', 'labels']", line=1)
    out = []
    for line, row in rows:
        if len(row) != 2:
            raise InputError(path, f"{len(row)} fields, expected 2 (fname,labels)", line=line)
        fname = row[0].strip()
        if not fname:
            raise InputError(path, "empty value", line=line, column="fname")
        labels = [x.strip() for x in row[1].split(",")]
        if not all(labels):
            raise InputError(path, f"empty label in {row[1]!r}", line=line, column="labels")
        if len(set(labels)) != len(labels):
            raise InputError(path, f"a label is listed twice in {row[1]!r}", line=line, column="labels")
        out.append((line, fname, labels))
    if not out:
        raise InputError(path, "no data rows (header only)")
    return out


def read_submission(path: Path) -> tuple[list[str], list[tuple[int, str]]]:
    """Class list (header after ``fname``) and (line, fname) rows of sample_submission.csv."""
    header, rows = _csv_rows(path)
    if not header or header[0] != "fname" or len(header) < 2:
        raise InputError(path, f"header {header[:4]}... must be fname followed by the class names", line=1)
    classes = header[1:]
    if len(set(classes)) != len(classes) or not all(classes):
        raise InputError(path, "class names in the header must be distinct and non-empty", line=1)
    out = []
    for line, row in rows:
        if len(row) != len(header) or not row[0].strip():
            raise InputError(path, f"{len(row)} fields (header has {len(header)}) or empty fname", line=line)
        out.append((line, row[0].strip()))
    return classes, out


def load_wav(path: Path, sample_rate: int) -> np.ndarray:
    """Mono float32 samples of a PCM WAV file at ``sample_rate``, validated."""
    if not path.is_file():
        raise InputError(path, "wav file not found")
    try:
        info = sf.info(str(path))
    except RuntimeError as e:
        raise InputError(path, f"not a readable audio file ({str(e).splitlines()[0]})") from None
    if info.format != "WAV":
        raise InputError(path, f"format {info.format}, expected WAV")
    if not info.subtype.startswith("PCM"):
        raise InputError(path, f"subtype {info.subtype} is not PCM")
    if info.frames == 0:
        raise InputError(path, "empty wav (no samples)")
    if info.samplerate != sample_rate:
        raise InputError(path, f"sample rate {info.samplerate} Hz, expected {sample_rate} Hz")
    try:
        x, _ = sf.read(str(path), dtype="float32", always_2d=True)
    except RuntimeError as e:
        raise InputError(path, f"unreadable wav ({str(e).splitlines()[0]})") from None
    if len(x) == 0:
        raise InputError(path, "empty wav (no samples)")
    return x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]


class LogMel:
    """The log-mel transform of the module docstring: ``__call__(samples) -> (frames, n_mels)`` float32."""

    def __init__(self, sample_rate: int = 44100, n_fft: int = 1764, hop: int = 220, n_mels: int = 64):
        self.n_fft, self.hop = n_fft, hop
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=n_fft, win_length=n_fft, hop_length=hop, n_mels=n_mels, f_min=F_MIN,
            f_max=sample_rate / 2, power=2.0, center=True, pad_mode="reflect", norm=None, mel_scale="htk",
        )
        self.to_db = torchaudio.transforms.AmplitudeToDB(stype="power", top_db=TOP_DB)
        self.config = {"sample_rate": sample_rate, "n_fft": n_fft, "win_length": n_fft, "hop_length": hop,
                       "n_mels": n_mels, "f_min": F_MIN, "f_max": sample_rate / 2, "power": 2.0, "center": True,
                       "pad_mode": "reflect", "norm": None, "mel_scale": "htk", "window": "hann",
                       "db": {"stype": "power", "top_db": TOP_DB, "amin": 1e-10}, "frames": "1 + n // hop"}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        if n <= self.n_fft // 2:
            x = np.concatenate([x, np.zeros(self.n_fft // 2 + 1 - n, dtype=x.dtype)])
        with torch.inference_mode():
            spec = self.to_db(self.mel(torch.from_numpy(np.ascontiguousarray(x))))
        out = spec.T.numpy()
        return out[: 1 + n // self.hop]


def ordered_map(fn: Callable, items: Iterable, workers: int) -> Iterator:
    """``map(fn, items)`` on a thread pool, in order, at most ``2 * workers`` results ahead (bounded memory).

    The first exception in item order is raised; queued work is cancelled.
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    pool = ThreadPoolExecutor(workers)
    window: deque[Future] = deque()
    try:
        for item in items:
            window.append(pool.submit(fn, item))
            if len(window) >= 2 * workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """One intra-op thread per clip transform (clips run in parallel instead), restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def ingest_fsd(raw_dir: str | Path, store_path: str | Path, overwrite: bool = False, progress: bool = True,
               sample_rate: int = 44100, n_fft: int = 1764, hop: int = 220, n_mels: int = 64,
               sample_frames: int | None = None, kind: str = "affine", two_pass: bool = False,
               workers: int | None = None) -> FrameIngestSummary:
    """Ingest an FSDKaggle2019 release (or a synthetic one) into a new store at ``store_path``.

    Clips are decoded and transformed by ``workers`` threads (default: CPU count, at most 16), each
    torch transform single-threaded, and written in order.
    """
    workers = workers or min(16, os.cpu_count() or 1)
    with _torch_threads(1):
        return _ingest_fsd(raw_dir, store_path, overwrite, progress, sample_rate, n_fft, hop, n_mels,
                           sample_frames, kind, two_pass, workers)


def _ingest_fsd(raw_dir: str | Path, store_path: str | Path, overwrite: bool, progress: bool, sample_rate: int,
                n_fft: int, hop: int, n_mels: int, sample_frames: int | None, kind: str, two_pass: bool,
                workers: int) -> FrameIngestSummary:
    t0 = time.perf_counter()
    raw_dir = Path(raw_dir)
    refuse_existing(store_path, overwrite)
    if not raw_dir.is_dir():
        raise InputError(raw_dir, "raw directory not found")
    metas = [raw_dir / f"{s}.csv" for s, _ in SPLITS]
    train = []  # (wav path, fname, labels, curated)
    seen: dict[str, tuple[Path, int]] = {}
    for (split, curated), meta in zip(SPLITS, metas, strict=True):
        for line, fname, labels in read_labels(meta):
            if fname in seen:
                first, first_line = seen[fname]
                raise InputError(meta, f"fname {fname!r} appears twice (first in {first.name}, line {first_line})",
                                 line=line, column="fname")
            seen[fname] = (meta, line)
            train.append((raw_dir / split / fname, fname, labels, curated, meta, line))
    sub = raw_dir / "sample_submission.csv"
    test: list[tuple[Path, str]] = []
    notes = []
    if sub.is_file():
        metas.append(sub)
        class_list, sub_rows = read_submission(sub)
        classes = Dictionary(class_list)
        known = set(class_list)
        for _, _, labels, _, meta, line in train:
            for lab in labels:
                if lab not in known:
                    raise InputError(meta, f"label {lab!r} is not a class of {sub.name}", line=line, column="labels")
        if (raw_dir / "test").is_dir():
            test = [(raw_dir / "test" / fname, fname) for _, fname in sub_rows]
        else:
            notes.append("sample_submission.csv but no test/ directory: store has no test split")
    else:
        classes = Dictionary()
        for _, _, labels, *_ in train:
            classes.extend(labels)
        notes.append("no sample_submission.csv: class list = labels in file order, no test split")
    for path, _, _, _, meta, line in train:
        if not path.is_file():
            raise InputError(path, f"wav file not found (listed in {meta.name}, line {line})")
    for path, _ in test:
        if not path.is_file():
            raise InputError(path, f"wav file not found (listed in {sub.name})")
    wavs = [t[0] for t in train] + [p for p, _ in test]
    wav_bytes = sum(p.stat().st_size for p in wavs)
    summary = FrameIngestSummary("fsdkaggle2019", files=len(metas) + len(wavs),
                                 raw_bytes=wav_bytes + sum(m.stat().st_size for m in metas), notes=notes)
    logmel = LogMel(sample_rate, n_fft, hop, n_mels)

    def features(path: Path) -> np.ndarray:
        return logmel(load_wav(path, sample_rate))

    extremes = None
    if two_pass:
        extremes = RangeScan(n_mels)
        for frames in tqdm(ordered_map(features, wavs, workers), total=len(wavs), unit="clip", desc="scan fsd",
                           disable=not progress):
            extremes.update(frames)
    with staged_directory(store_path, overwrite) as stage, contextlib.ExitStack() as cleanup, tqdm(
        total=len(wavs), unit="clip", desc="ingest fsd", disable=not progress
    ) as bar:
        root = zarr.open_group(stage, mode="w", zarr_format=3)
        (stage / "dicts").mkdir()
        (stage / "ids").mkdir()
        tables = {}
        writer = FrameWriter(root, "train", n_mels, kind=kind, sample_frames=sample_frames, extremes=extremes,
                             columns={"curated": {"dtype": "uint8", "type": "bool"}},
                             labels={"dictionary": "class", "dtype": "int16"})
        cleanup.callback(writer.abort)
        for frames, (_, _, labels, curated, _, _) in zip(ordered_map(features, [t[0] for t in train], workers),
                                                          train, strict=True):
            codes = [classes.add(lab) for lab in labels]
            writer.append(frames, {"curated": int(curated)}, labels=codes)
            bar.update(1)
        tables["train"] = writer.close(split="train", logmel=logmel.config)
        write_ids(stage, "train", [t[1] for t in train])
        if test:
            tw = FrameWriter(root, "test", n_mels, quantizers=writer.quantizers)
            cleanup.callback(tw.abort)
            for frames in ordered_map(features, [p for p, _ in test], workers):
                tw.append(frames)
                bar.update(1)
            tables["test"] = tw.close(split="test", logmel=logmel.config, quantizers_from="train",
                                      exact_range=two_pass)
            write_ids(stage, "test", [f for _, f in test])
        classes.write(stage / "dicts" / "class.parquet")
        sources = source_entries(raw_dir, metas, len(wavs), wav_bytes, "{train_curated,train_noisy,test}/*.wav")
        manifest = write_manifest(stage, "fsdkaggle2019", tables, sources)
    return summary.finish(manifest, t0)
