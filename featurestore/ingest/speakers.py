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

import contextlib
import json
import time
from pathlib import Path

import numpy as np
import torch
import zarr
from tqdm import tqdm

from ..store import Dictionary, InputError, staged_directory, write_manifest
from ..store.frame_writer import FrameWriter, RangeScan
from .frames_common import FrameIngestSummary, refuse_existing, source_entries, write_ids


def _json(path: Path) -> dict:
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(path, f"not valid JSON ({e.msg})", line=e.lineno) from None
    except UnicodeDecodeError:
        raise InputError(path, "not UTF-8 text") from None
    if not isinstance(obj, dict):
        raise InputError(path, "top level is not a JSON object")
    return obj


def _speakers(path: Path) -> Dictionary:
    m = _json(path)
    s2i = m.get("speaker2id")
    if not isinstance(s2i, dict) or not s2i:
        raise InputError(path, "no speaker2id object")
    ids = list(s2i.values())
    if not all(isinstance(i, int) for i in ids) or sorted(ids) != list(range(len(ids))):
        raise InputError(path, "speaker2id values are not the integers 0..n-1")
    i2s = m.get("id2speaker")
    if i2s is not None and i2s != {str(i): s for s, i in s2i.items()}:
        raise InputError(path, "id2speaker disagrees with speaker2id")
    return Dictionary([s for s, _ in sorted(s2i.items(), key=lambda kv: kv[1])])


def _n_mels(path: Path, obj: dict) -> int:
    n = obj.get("n_mels")
    if not isinstance(n, int) or n < 1:
        raise InputError(path, f"n_mels {n!r} is not a positive integer")
    return n


def _entry(path: Path, u, where: str) -> tuple[str, int]:
    if not isinstance(u, dict) or not isinstance(u.get("feature_path"), str) or not isinstance(u.get("mel_len"), int):
        raise InputError(path, f"{where}: expected {{'feature_path': str, 'mel_len': int}}, got {u!r}"[:300])
    if u["mel_len"] < 0:
        raise InputError(path, f"{where}: negative mel_len {u['mel_len']}")
    return u["feature_path"], u["mel_len"]


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


def ingest_speakers(raw_dir: str | Path, store_path: str | Path, overwrite: bool = False, progress: bool = True,
                    sample_frames: int | None = None, kind: str = "affine", two_pass: bool = True
                    ) -> FrameIngestSummary:
    """Ingest the speaker-classification homework data (or a synthetic one) into ``store_path``."""
    t0 = time.perf_counter()
    raw_dir = Path(raw_dir)
    refuse_existing(store_path, overwrite)
    if not raw_dir.is_dir():
        raise InputError(raw_dir, "raw directory not found")
    root_dir = raw_dir / "Dataset" if (raw_dir / "Dataset").is_dir() else raw_dir
    mapping, meta_p, test_p, labels_p = (root_dir / n for n in
                                         ("mapping.json", "metadata.json", "testdata.json", "test_labels.json"))
    speakers = _speakers(mapping)
    known = set(speakers.values)
    meta = _json(meta_p)
    n_mels = _n_mels(meta_p, meta)
    per_speaker = meta.get("speakers")
    if not isinstance(per_speaker, dict):
        raise InputError(meta_p, "no speakers object")
    seen: dict[str, Path] = {}

    def claim(fp: str, where: Path) -> None:
        if fp in seen:
            raise InputError(where, f"feature path {fp!r} appears twice (also in {seen[fp].name})")
        seen[fp] = where

    train = []  # (feature_path, mel_len, speaker code)
    for spk, utts in per_speaker.items():
        if spk not in known:
            raise InputError(meta_p, f"speaker {spk!r} is not in {mapping.name}")
        if not isinstance(utts, list):
            raise InputError(meta_p, f"speaker {spk!r}: utterances are not a list")
        for k, u in enumerate(utts):
            fp, n = _entry(meta_p, u, f"speakers[{spk!r}][{k}]")
            claim(fp, meta_p)
            train.append((fp, n, speakers.add(spk)))
    metas = [mapping, meta_p]
    test, test_labels = [], None
    notes = []
    if test_p.is_file():
        metas.append(test_p)
        tmeta = _json(test_p)
        if _n_mels(test_p, tmeta) != n_mels:
            raise InputError(test_p, f"n_mels {tmeta['n_mels']} but {meta_p.name} says {n_mels}")
        utts = tmeta.get("utterances")
        if not isinstance(utts, list):
            raise InputError(test_p, "no utterances list")
        for k, u in enumerate(utts):
            fp, n = _entry(test_p, u, f"utterances[{k}]")
            claim(fp, test_p)
            test.append((fp, n))
        if labels_p.is_file():
            metas.append(labels_p)
            test_labels = _json(labels_p)
            for fp, _ in test:
                spk = test_labels.get(fp)
                if spk is None:
                    raise InputError(labels_p, f"no label for test utterance {fp!r}")
                if spk not in known:
                    raise InputError(labels_p, f"speaker {spk!r} (of {fp!r}) is not in {mapping.name}")
        else:
            notes.append("no test_labels.json: test utterances are unlabelled")
    else:
        notes.append("no testdata.json: store has no test split")
    for fp, _, *_ in train + test:
        p = root_dir / fp
        if not p.is_file():
            raise InputError(p, f"feature file not found (listed in {seen[fp].name})")
    pt_bytes = sum((root_dir / fp).stat().st_size for fp, *_ in train + test)
    summary = FrameIngestSummary("speakers-voxceleb-mel", files=len(metas) + len(train) + len(test),
                                 raw_bytes=pt_bytes + sum(m.stat().st_size for m in metas), notes=notes)
    extremes = None
    if two_pass:
        extremes = RangeScan(n_mels)
        items = [(fp, n, meta_p) for fp, n, _ in train] + [(fp, n, test_p) for fp, n in test]
        for fp, n, where in tqdm(items, unit="utt", desc="scan speakers", disable=not progress):
            extremes.update(_frames(load_utterance(root_dir / fp, n, n_mels, where)))
    with staged_directory(store_path, overwrite) as stage, contextlib.ExitStack() as cleanup, tqdm(
        total=len(train) + len(test), unit="utt", desc="ingest speakers", disable=not progress
    ) as bar:
        root = zarr.open_group(stage, mode="w", zarr_format=3)
        (stage / "dicts").mkdir()
        (stage / "ids").mkdir()
        speaker_col = {"speaker": {"dtype": "int32", "dictionary": "speaker"}}
        tables = {}
        writer = FrameWriter(root, "train", n_mels, kind=kind, sample_frames=sample_frames, extremes=extremes,
                             columns=speaker_col)
        cleanup.callback(writer.abort)
        for fp, n, code in train:
            writer.append(_frames(load_utterance(root_dir / fp, n, n_mels, meta_p)), {"speaker": code})
            bar.update(1)
        tables["train"] = writer.close(split="train")
        write_ids(stage, "train", [fp for fp, *_ in train])
        if test_p.is_file():
            labelled = test_labels is not None
            tw = FrameWriter(root, "test", n_mels, quantizers=writer.quantizers,
                             columns=speaker_col if labelled else None)
            cleanup.callback(tw.abort)
            for fp, n in test:
                values = {"speaker": speakers.add(test_labels[fp])} if labelled else None
                tw.append(_frames(load_utterance(root_dir / fp, n, n_mels, test_p)), values)
                bar.update(1)
            tables["test"] = tw.close(split="test", labelled=labelled, quantizers_from="train", exact_range=two_pass)
            write_ids(stage, "test", [fp for fp, _ in test])
        speakers.write(stage / "dicts" / "speaker.parquet")
        pattern = str(root_dir.relative_to(raw_dir) / "uttr-*.pt")
        sources = source_entries(raw_dir, metas, len(train) + len(test), pt_bytes, pattern)
        manifest = write_manifest(stage, "speakers-voxceleb-mel", tables, sources)
    return summary.finish(manifest, t0)
