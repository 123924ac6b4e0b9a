"""``fstore ingest speakers``: VoxCeleb-subset 40-band mel utterances (.pt tensors) -> frame sets.

Raw layout (DATASETS.md section 5), under ``RAW_DIR/Dataset`` (or RAW_DIR itself when it holds the
files): ``mapping.json`` (``speaker2id`` / ``id2speaker``), ``metadata.json`` (``n_mels`` and, per speaker,
``[{"feature_path", "mel_len"}]``), ``testdata.json`` (``n_mels`` and ``utterances``), one ``uttr-*.pt``
per utterance (a float tensor of shape (mel_len, n_mels), loaded with ``torch.load(weights_only=True)``)
and, optionally, ``test_labels.json`` (``{feature_path: speaker}``; not part of the real homework).

Tables written:
- ``train``: frame set (store/frames.py), utterances in metadata.json order (speaker by speaker), frames =
  the tensor as is (mel_len x n_mels); ``clips/speaker`` int32 codes into ``dicts/speaker.parquet``,
  whose code i is the speaker with ``speaker2id`` i.
- ``test``: frame set in testdata.json order, encoded with the train quantizers; ``clips/speaker`` only
  when test_labels.json is present (table attribute ``labelled``).
- ``ids/train.parquet``, ``ids/test.parquet``: the feature paths.
Quantizers: one affine 8-bit quantizer per mel band, fitted on the first ``sample_frames`` frames of
train (64 MB of float32 by default) plus, with ``two_pass`` (default), the exact per-band min / max over
every train and test utterance from a first read-only pass (which also validates every file before
anything is written), so no value is clipped.

Bad input (InputError naming the file; nothing is committed): a missing or unparsable JSON file or one
without the expected fields, speaker ids in mapping.json that are not 0..n-1, a speaker (metadata.json or
test_labels.json) not in mapping.json, a test utterance missing from test_labels.json, a duplicate
feature path, a missing .pt file, a .pt that is not a 2-D floating-point tensor, n_mels disagreeing with
metadata.json, a tensor length disagreeing with its mel_len.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..schemas import speakers as S
from ..store import InputError
from .builder import IngestSummary
from .clips import Clip, ClipSourceBase, ClipSplit, ingest_clips
from .table import json_records, read_json


def _speakers(path: Path) -> list[str]:
    """Speaker names in speaker2id order (code i = the speaker with id i)."""
    m = read_json(path)
    s2i = m.get("speaker2id")
    if not isinstance(s2i, dict) or not s2i:
        raise InputError(path, "no speaker2id object")
    ids = list(s2i.values())
    if not all(isinstance(i, int) for i in ids) or sorted(ids) != list(range(len(ids))):
        raise InputError(path, "speaker2id values are not the integers 0..n-1")
    i2s = m.get("id2speaker")
    if i2s is not None and i2s != {str(i): s for s, i in s2i.items()}:
        raise InputError(path, "id2speaker disagrees with speaker2id")
    return [s for s, _ in sorted(s2i.items(), key=lambda kv: kv[1])]


def _n_mels(path: Path, obj: dict) -> int:
    n = obj.get("n_mels")
    if not isinstance(n, int) or n < 1:
        raise InputError(path, f"n_mels {n!r} is not a positive integer")
    return n


def _utterances(path: Path, items: object, where: str) -> list[tuple[str, int]]:
    """(feature_path, mel_len) of an array of utterance entries."""
    out = []
    for k, u in enumerate(json_records(path, items, S.UTTERANCE, where)):
        if u["mel_len"] < 0:
            raise InputError(path, f"{where}[{k}], field 'mel_len': negative mel_len {u['mel_len']}")
        out.append((u["feature_path"], u["mel_len"]))
    return out


def load_utterance(path: Path, mel_len: int, n_mels: int, meta: Path) -> torch.Tensor:
    """The (mel_len, n_mels) float tensor of one .pt file, validated against its metadata."""
    if not path.is_file():
        raise InputError(path, f"feature file not found (listed in {meta.name})")
    try:
        t = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - torch.load raises many types for damaged files
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(path, f"not a readable torch file ({msg[:200]})") from None
    if not isinstance(t, torch.Tensor):
        raise InputError(path, f"holds a {type(t).__name__}, not a tensor")
    if t.dim() != 2 or not t.is_floating_point():
        raise InputError(path, f"a {t.dim()}-D {t.dtype} tensor, expected a 2-D float tensor (mel_len x n_mels)")
    if t.shape[1] != n_mels:
        raise InputError(path, f"shape {tuple(t.shape)}: {t.shape[1]} mel bands, {meta.name} says n_mels = {n_mels}")
    if t.shape[0] != mel_len:
        raise InputError(path, f"shape {tuple(t.shape)}: {t.shape[0]} frames, {meta.name} says mel_len = {mel_len}")
    return t


def _frames(t: torch.Tensor) -> np.ndarray:
    if t.dtype not in (torch.float32, torch.float64):
        t = t.to(torch.float32)
    return t.detach().numpy()


class SpeakersSource(ClipSourceBase):
    """The source adapter of the speaker homework data (see ``clips.ClipSource``)."""

    dataset, name, unit, pattern = "speakers-voxceleb-mel", "speakers", "utt", S.FEATURE_GLOB

    def read(self) -> None:
        if not self.raw_dir.is_dir():
            raise InputError(self.raw_dir, "raw directory not found")
        root = self.raw_dir / S.DATASET_DIR if (self.raw_dir / S.DATASET_DIR).is_dir() else self.raw_dir
        self.pattern = str(root.relative_to(self.raw_dir) / S.FEATURE_GLOB)
        mapping, meta_p, test_p, labels_p = (root / n for n in (S.MAPPING, S.METADATA, S.TESTDATA, S.TEST_LABELS))
        speakers = _speakers(mapping)
        self.dictionaries["speaker"] = speakers
        known = set(speakers)
        meta = read_json(meta_p)
        self.bins = n_mels = _n_mels(meta_p, meta)
        per_speaker = meta.get("speakers")
        if not isinstance(per_speaker, dict):
            raise InputError(meta_p, "no speakers object")
        seen: dict[str, Path] = {}

        def clip(fp: str, n: int, listed_in: Path, values: dict | None = None) -> Clip:
            if fp in seen:
                raise InputError(listed_in, f"feature path {fp!r} appears twice (also in {seen[fp].name})")
            seen[fp] = listed_in
            return Clip(fp, root / fp, values or {}, extra=(n, n_mels, listed_in))

        train = []
        for spk, utts in per_speaker.items():
            if spk not in known:
                raise InputError(meta_p, f"speaker {spk!r} is not in {mapping.name}")
            train += [clip(fp, n, meta_p, {"speaker": spk}) for fp, n in _utterances(meta_p, utts, f"speakers[{spk!r}]")]
        self.meta_files = [mapping, meta_p]
        speaker_col = {"speaker": {"dtype": "int32", "dictionary": "speaker"}}
        self.splits.append(ClipSplit("train", train, speaker_col))
        if not test_p.is_file():
            self.notes.append(f"no {S.TESTDATA}: store has no test split")
        else:
            self.meta_files.append(test_p)
            tmeta = read_json(test_p)
            if _n_mels(test_p, tmeta) != n_mels:
                raise InputError(test_p, f"n_mels {tmeta['n_mels']} but {meta_p.name} says {n_mels}")
            if not isinstance(tmeta.get("utterances"), list):
                raise InputError(test_p, "no utterances list")
            test = [clip(fp, n, test_p) for fp, n in _utterances(test_p, tmeta["utterances"], "utterances")]
            labelled = labels_p.is_file()
            if labelled:
                self.meta_files.append(labels_p)
                test_labels = read_json(labels_p)
                for c in test:
                    spk = test_labels.get(c.id)
                    if spk is None:
                        raise InputError(labels_p, f"no label for test utterance {c.id!r}")
                    if spk not in known:
                        raise InputError(labels_p, f"speaker {spk!r} (of {c.id!r}) is not in {mapping.name}")
                    c.values["speaker"] = spk
            else:
                self.notes.append(f"no {S.TEST_LABELS}: test utterances are unlabelled")
            self.splits.append(ClipSplit("test", test, speaker_col if labelled else {}, attrs={"labelled": labelled}))
        for c in train + (self.splits[1].clips if len(self.splits) > 1 else []):
            if not c.path.is_file():
                raise InputError(c.path, f"feature file not found (listed in {seen[c.id].name})")

    def load(self, clip: Clip) -> np.ndarray:
        n, n_mels, listed_in = clip.extra
        return _frames(load_utterance(clip.path, n, n_mels, listed_in))


def _frames(t: torch.Tensor) -> np.ndarray:
    if t.dtype not in (torch.float32, torch.float64):
        t = t.to(torch.float32)
    return t.detach().numpy()


def ingest_speakers(raw_dir: str | Path, store_path: str | Path, overwrite: bool = False, progress: bool = True,
                    sample_frames: int | None = None, kind: str = "affine", two_pass: bool = True,
                    append: bool = False) -> IngestSummary:
    """Ingest the speaker-classification homework data (or a synthetic one) into ``store_path``."""
    return ingest_clips(SpeakersSource(raw_dir), store_path, overwrite=overwrite, progress=progress,
                        sample_frames=sample_frames, kind=kind, two_pass=two_pass, append=append)
