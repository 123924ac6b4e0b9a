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

on the wav as float32 in [-1, 1] (clips shorter than n_fft / 2 samples are zero-padded so the reflect
padding is defined). A clip of n samples gives 1 + n // hop frames of ``n_mels`` bins, stored as
time x n_mels.

The release is 16-bit PCM mono at 44.1 kHz. Other wavs are converted, each conversion counted and
reported in the ingest summary (``read_wav`` counts, ``FsdSource.count_notes`` words them): a
multi-channel clip is mixed down to mono (its channels averaged); an 8-bit clip (PCM_U8) is scaled to
[-1, 1] as ``(v - 128) / 128`` (256 levels against 16-bit's 65536); a 24-bit clip is read exactly, a
32-bit one rounded to float32. Nothing is resampled: another sample rate is an error.

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

Zero noisy clips: ``train_noisy.csv`` may be header-only (``fstore synth fsd --noisy 0`` writes one, as
the release always has both files); it is then zero noisy clips. A header-only ``train_curated.csv`` or a
missing CSV is an error. CSVs are read with ``table.read_table`` (a BOM, CRLF, blank lines at the end
and spaces around names are accepted). WAV files: plain RIFF/WAVE and WAVE_FORMAT_EXTENSIBLE (WAVEX)
headers, PCM samples.

Bad input (InputError naming the file, and the line for CSV problems; nothing is committed): missing
CSV, wrong header, malformed CSV line (unterminated quote, wrong number of fields, empty fname or
label, a label listed twice), duplicate fname, unknown label (class list from sample_submission.csv),
missing wav, unreadable or non-WAV file, non-PCM subtype, empty wav, a wav truncated inside its data
(the header promises more samples than the file holds), wrong sample rate.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from ..schemas import fsd as S
from ..store import InputError
from ..torch_pair import import_torchaudio
from .builder import IngestSummary
from .clips import Clip, ClipSourceBase, ClipSplit, ingest_clips
from .table import read_table

torchaudio = import_torchaudio()  # one line naming the fix when torch and torchaudio do not match

TOP_DB = S.TOP_DB
F_MIN = S.F_MIN
WAV_FORMATS = ("WAV", "WAVEX")  # RIFF/WAVE with a plain or a WAVE_FORMAT_EXTENSIBLE fmt chunk


def read_labels(path: Path, allow_empty: bool = False) -> list[tuple[int, str, list[str]]]:
    """(line, fname, labels) of a ``fname,labels`` file."""
    table = read_table(path, S.LABEL_COLUMNS, exact=True, allow_empty=allow_empty)
    out = []
    for line, (fname, field) in table.rows:
        if not fname:
            raise InputError(path, "empty value", line=line, column=S.FNAME)
        labels = [x.strip() for x in field.split(S.LABEL_SEPARATOR)]
        if not all(labels):
            raise InputError(path, f"empty label in {field!r}", line=line, column=S.LABELS)
        if len(set(labels)) != len(labels):
            raise InputError(path, f"a label is listed twice in {field!r}", line=line, column=S.LABELS)
        out.append((line, fname, labels))
    return out


def read_submission(path: Path) -> tuple[list[str], list[tuple[int, str]]]:
    """Class list (header after ``fname``) and (line, fname) rows of sample_submission.csv."""
    table = read_table(path, [S.FNAME], allow_empty=True)
    if table.header[0] != S.FNAME or len(table.header) < 2:
        raise InputError(path, f"header {table.header[:4]}... must be fname followed by the class names", line=1)
    if not all(table.header):
        raise InputError(path, "class names in the header must be distinct and non-empty", line=1)
    return table.header[1:], [(line, row[S.FNAME]) for line, row in table.records([S.FNAME])]


def _check_wav_length(path: Path) -> None:
    """Reject a RIFF file whose data chunk is cut short: libsndfile would silently read what is there."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return  # not RIFF/WAVE: soundfile's own checks report it
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk, length = struct.unpack("<4sI", f.read(8))
            if chunk == b"data":
                if length in (0, 0xFFFFFFFF):  # streamed writers leave the size open
                    return
                held = size - pos - 8
                if held < length:
                    raise InputError(path, f"truncated wav: the header promises {length} bytes of samples, "
                                           f"the file holds {held}")
                return
            pos += 8 + length + (length & 1)  # chunks are padded to even sizes


RELEASE_SUBTYPE = "PCM_16"  # what FSDKaggle2019 ships; other PCM subtypes are converted and counted
SUBTYPE_NOTES = {  # what reading a clip of that subtype as float32 in [-1, 1] does
    "PCM_U8": "8-bit clip{s} (unsigned PCM_U8) scaled to [-1, 1] as (v - 128) / 128: 256 levels, not 16-bit's 65536",
    "PCM_24": "24-bit clip{s} (PCM_24) read as float32 in [-1, 1] (v / 2^23: exact)",
    "PCM_32": "32-bit clip{s} (PCM_32) rounded to float32 in [-1, 1] (v / 2^31, to 24 significant bits)",
}


def load_wav(path: Path, sample_rate: int) -> np.ndarray:
    """Mono float32 samples of a PCM WAV (or WAVEX) file at ``sample_rate``, validated."""
    return read_wav(path, sample_rate)[0]


def read_wav(path: Path, sample_rate: int) -> tuple[np.ndarray, dict[str, int]]:
    """``load_wav`` and what it converted: ``{"channels:N": 1}`` for N > 1 channels mixed down to mono,
    ``{"subtype:S": 1}`` for a PCM subtype S other than the release's 16-bit."""
    if not path.is_file():
        raise InputError(path, "wav file not found")
    try:
        info = sf.info(str(path))
    except RuntimeError as e:
        raise InputError(path, f"not a readable audio file ({str(e).splitlines()[0]})") from None
    if info.format not in WAV_FORMATS:
        raise InputError(path, f"format {info.format}, expected WAV")
    if not info.subtype.startswith("PCM"):
        raise InputError(path, f"subtype {info.subtype} is not PCM")
    if info.frames == 0:
        raise InputError(path, "empty wav (no samples)")
    if info.samplerate != sample_rate:
        raise InputError(path, f"sample rate {info.samplerate} Hz, expected {sample_rate} Hz")
    _check_wav_length(path)
    try:
        x, _ = sf.read(str(path), dtype="float32", always_2d=True)
    except RuntimeError as e:
        raise InputError(path, f"unreadable wav ({str(e).splitlines()[0]})") from None
    if len(x) != info.frames:
        raise InputError(path, f"truncated wav: {len(x)} samples read, the header promises {info.frames}")
    counts = {}
    if info.subtype != RELEASE_SUBTYPE:
        counts[f"subtype:{info.subtype}"] = 1
    if x.shape[1] > 1:
        counts[f"channels:{x.shape[1]}"] = 1
        return x.mean(axis=1), counts
    return x[:, 0], counts


class LogMel:
    """The log-mel transform of the module docstring: ``__call__(samples) -> (frames, n_mels)`` float32."""

    def __init__(self, sample_rate: int = S.SAMPLE_RATE, n_fft: int = S.N_FFT, hop: int = S.HOP,
                 n_mels: int = S.N_MELS):
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


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """One intra-op thread per clip transform (clips run in parallel instead), restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class FsdSource(ClipSourceBase):
    """The source adapter of an FSDKaggle2019 release (see ``clips.ClipSource``)."""

    dataset, name, unit = "fsdkaggle2019", "fsd", "clip"
    pattern = "{train_curated,train_noisy,test}/*.wav"

    def __init__(self, raw_dir: str | Path, logmel: LogMel, sample_rate: int):
        super().__init__(raw_dir)
        self.logmel, self.sample_rate = logmel, sample_rate
        self.bins = logmel.config["n_mels"]

    def read(self) -> None:
        raw = self.raw_dir
        if not raw.is_dir():
            raise InputError(raw, "raw directory not found")
        train: list[Clip] = []
        where: dict[str, tuple[Path, int]] = {}  # fname -> (csv, line)
        for split, curated in S.TRAIN_SPLITS:
            meta = raw / f"{split}.csv"
            self.meta_files.append(meta)
            for line, fname, labels in read_labels(meta, allow_empty=not curated):
                if fname in where:
                    first, first_line = where[fname]
                    raise InputError(meta, f"fname {fname!r} appears twice (first in {first.name}, line {first_line})",
                                     line=line, column=S.FNAME)
                where[fname] = (meta, line)
                train.append(Clip(fname, raw / split / fname, {"curated": int(curated)}, labels))
        sub = raw / S.SUBMISSION
        test: list[Clip] = []
        if sub.is_file():
            self.meta_files.append(sub)
            classes, sub_rows = read_submission(sub)
            self.dictionaries["class"] = classes
            known = set(classes)
            for clip in train:
                for lab in clip.labels:
                    if lab not in known:
                        meta, line = where[clip.id]
                        raise InputError(meta, f"label {lab!r} is not a class of {sub.name}", line=line,
                                         column=S.LABELS)
            if (raw / S.TEST_DIR).is_dir():
                test = [Clip(fname, raw / S.TEST_DIR / fname) for _, fname in sub_rows]
            else:
                self.notes.append(f"{sub.name} but no {S.TEST_DIR}/ directory: store has no test split")
        else:
            self.notes.append(f"no {sub.name}: class list = labels in file order, no test split")
        for clip in train:
            if not clip.path.is_file():
                meta, line = where[clip.id]
                raise InputError(clip.path, f"wav file not found (listed in {meta.name}, line {line})")
        for clip in test:
            if not clip.path.is_file():
                raise InputError(clip.path, f"wav file not found (listed in {sub.name})")
        attrs = {"logmel": self.logmel.config}
        self.splits.append(ClipSplit("train", train, {"curated": {"dtype": "uint8", "type": "bool"}},
                                     labels={"dictionary": "class", "dtype": "int16"}, attrs=attrs))
        if test:
            self.splits.append(ClipSplit("test", test, attrs=attrs))

    def load(self, clip: Clip) -> np.ndarray:
        return self.load_counted(clip)[0]

    def load_counted(self, clip: Clip) -> tuple[np.ndarray, dict[str, int]]:
        x, counts = read_wav(clip.path, self.sample_rate)
        return self.logmel(x), counts

    def count_notes(self, counts: Counter) -> list[str]:
        """One note per kind of conversion ``read_wav`` counted."""
        out = []
        for key, n in sorted(counts.items(), key=lambda kv: (kv[0].split(":")[0], kv[0])):
            kind, value = key.split(":", 1)
            s = "s" * (n != 1)
            if kind == "channels":
                what = "stereo" if value == "2" else f"{value}-channel"
                out.append(f"{n} {what} clip{s} mixed down to mono (channels averaged)")
            elif kind == "subtype":
                out.append(f"{n} " + SUBTYPE_NOTES.get(value, "clip{s} of PCM subtype " + value +
                                                        " read as float32 in [-1, 1]").format(s=s))
        return out


def ingest_fsd(raw_dir: str | Path, store_path: str | Path, overwrite: bool = False, progress: bool = True,
               sample_rate: int = S.SAMPLE_RATE, n_fft: int = S.N_FFT, hop: int = S.HOP, n_mels: int = S.N_MELS,
               sample_frames: int | None = None, kind: str = "affine", two_pass: bool = False,
               workers: int | None = None, append: bool = False) -> IngestSummary:
    """Ingest an FSDKaggle2019 release (or a synthetic one) into a new store at ``store_path``.

    Clips are decoded and transformed by ``workers`` threads (default: CPU count, at most 16), each
    torch transform single-threaded, and written in order.
    """
    workers = workers or min(16, os.cpu_count() or 1)
    source = FsdSource(raw_dir, LogMel(sample_rate, n_fft, hop, n_mels), sample_rate)
    with _torch_threads(1):
        return ingest_clips(source, store_path, overwrite=overwrite, progress=progress,
                            sample_frames=sample_frames, kind=kind, two_pass=two_pass, workers=workers,
                            append=append)
