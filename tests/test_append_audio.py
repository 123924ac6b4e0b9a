"""Appending clips to audio stores: ingest A then append B == ingest A + B (within the quantizer bound)."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from featurestore.cli import main
from featurestore.ingest.fsd import ingest_fsd
from featurestore.ingest.yandex import YandexSource, ingest_yandex
from featurestore.store import Store
from featurestore.store import versions as V
from featurestore.store.errors import StoreError
from featurestore.synth.fsd import synth_fsd
from featurestore.synth.yandex import synth_yandex


def _split_rows(src: Path, dst_a: Path, dst_b: Path, name: str, keep_a, delimiter: str) -> list[list[str]]:
    """Rows of ``src/name`` into A (rows where ``keep_a(i)``) and B; returns B's rows."""
    with open(src / name, newline="") as f:
        rows = list(csv.reader(f, delimiter=delimiter))
    out_b = []
    for dst, pick in ((dst_a, True), (dst_b, False)):
        dst.mkdir(parents=True, exist_ok=True)
        chosen = [r for i, r in enumerate(rows[1:]) if bool(keep_a(i)) == pick]
        with open(dst / name, "w", newline="") as f:
            csv.writer(f, delimiter=delimiter, lineterminator="\n").writerows([rows[0], *chosen])
        if not pick:
            out_b = chosen
    return out_b


def _link_tree(src: Path, dst: Path, suffix: str) -> None:
    for dirpath, _, names in os.walk(src):
        for n in names:
            if n.endswith(suffix):
                rel = Path(dirpath, n).relative_to(src)
                (dst / rel).parent.mkdir(parents=True, exist_ok=True)
                os.link(Path(dirpath, n), dst / rel)


@pytest.fixture(scope="module")
def yandex_raw(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A synthetic Yandex release, and A / B halves of its train and test tracks (every 3rd track in B)."""
    tmp = tmp_path_factory.mktemp("yappend")
    full, a, b = tmp / "full", tmp / "a", tmp / "b"
    synth_yandex(full, tracks=60, artists=8, test_tracks=9, seed=3)
    for name in ("train_meta.tsv", "test_meta.tsv"):
        _split_rows(full, a, b, name, lambda i: i % 3, "\t")
    for d in (a, b):
        _link_tree(full, d, ".npy")
    return full, a, b


def _source(raw: Path) -> YandexSource:
    src = YandexSource(raw)
    src.read()
    return src


def _frames_by_id(store: Store, split: str) -> dict[str, np.ndarray]:
    fs = store.frames(split)
    ids = store.ids(split)
    return {i: fs.dequantize(fs.clip(k)) for k, i in enumerate(ids)}


def _values_by_id(store: Store, split: str, column: str) -> dict[str, str]:
    fs = store.frames(split)
    codes = fs.column(column)
    d = store.dictionary(fs.clip_columns[column]["dictionary"]) if "dictionary" in fs.clip_columns[column] else None
    return {i: (d.values[c] if d else int(c)) for i, c in zip(store.ids(split), codes, strict=True)}


def test_yandex_append_equals_union(yandex_raw, tmp_path: Path) -> None:
    full, a, b = yandex_raw
    ingest_yandex(full, tmp_path / "union", progress=False)
    store = tmp_path / "s"
    ingest_yandex(a, store, progress=False)
    before = Store(store)
    v1_frames = {s: _frames_by_id(before, s) for s in ("train", "test")}
    v1_shard = before.frames("train").shard_path.read_bytes()
    summary = ingest_yandex(b, store, progress=False, append=True)
    assert summary.clips == {"train": 60, "test": 9}
    appended, union = Store(store), Store(tmp_path / "union")
    assert appended.version == 2 and V.read_entry(store, 2)["op"] == "append"
    assert appended.validate() == []
    new_clips = {c.id: c for sp in _source(b).splits for c in sp.clips}
    for split in ("train", "test"):
        got, want = _frames_by_id(appended, split), _frames_by_id(union, split)
        assert sorted(got) == sorted(want)
        bank = before.frames(split).bank
        lo, hi = bank.ranges()
        bound = bank.bounds()
        outside = 0
        for i in want:
            assert got[i].shape == want[i].shape
            if i in v1_frames[split]:  # the parent's clips decode exactly as before the append
                np.testing.assert_array_equal(got[i], v1_frames[split][i])
                continue
            x = YandexSource(b).load(new_clips[i])  # B's float frames, encoded with the parent's quantizers
            inside = (x >= lo) & (x <= hi)
            assert (np.abs(got[i] - x)[inside] <= bound[np.nonzero(inside)[1]] + 1e-4).all()
            np.testing.assert_allclose(got[i][~inside], np.clip(x, lo, hi)[~inside], atol=float(bound.max()) + 1e-4)
            outside += int((~inside).sum())
        assert sum(q["clipped"] for q in appended.tables[split]["quantizers"]) == outside
    assert _values_by_id(appended, "train", "artist") == _values_by_id(union, "train", "artist")
    # the parent version still reads identically, and its shard file was not touched
    old = Store(store, version=1)
    assert old.validate() == []
    assert old.frames("train").shard_path.read_bytes() == v1_shard
    assert {s: _frames_by_id(old, s).keys() for s in ("train", "test")} == {s: v1_frames[s].keys() for s in v1_frames}


def test_append_rewrites_only_last_chunks_and_the_shard(yandex_raw, tmp_path: Path, monkeypatch) -> None:
    """With small chunks (8 values), the parent's whole chunks stay shared (hard links) with the appended
    version; only each array's partial last chunk, the metadata, the ids and the frame shard are new."""
    import featurestore.store.frame_writer as fw

    monkeypatch.setattr(fw, "EVENT_CHUNK", 8)
    monkeypatch.setattr(fw, "ROW_CHUNK", 8)
    _, a, b = yandex_raw
    store = tmp_path / "s"
    ingest_yandex(a, store, progress=False)
    ingest_yandex(b, store, progress=False, append=True)
    e1, e2 = V.read_entry(store, 1), V.read_entry(store, 2)
    t1, t2 = V.tree_path(store, e1), V.tree_path(store, e2)
    rewritten = {rel for rel in e1["files"] if os.stat(t1 / rel).st_ino != os.stat(t2 / rel).st_ino}
    expected = {"ids/train.parquet", "ids/test.parquet", "train/frames/c/0/0", "test/frames/c/0/0"}
    for split in ("train", "test"):
        clips = e1["tables"][split]["clips"]
        expected |= {f"{split}/zarr.json", f"{split}/frames/zarr.json", f"{split}/offsets/zarr.json",
                     f"{split}/offsets/c/{(clips + 1) // 8}"}
        for col in e1["tables"][split]["clip_columns"]:
            expected |= {f"{split}/clips/{col}/zarr.json", f"{split}/clips/{col}/c/{clips // 8}"}
    # the artist vocabulary is rewritten exactly when B brings new artists (old codes keep their meaning)
    old_artists, artists = Store(store, version=1).dictionary("artist").values, Store(store).dictionary("artist").values
    assert artists[:len(old_artists)] == old_artists
    if len(artists) > len(old_artists):
        expected.add("dicts/artist.parquet")
    assert rewritten == expected & set(e1["files"])
    assert len(e1["files"]) - len(rewritten) > 10  # whole chunks shared
    assert Store(store).validate() == [] and Store(store, version=1).validate() == []


def test_duplicate_clip_refused_in_one_line(yandex_raw, tmp_path: Path) -> None:
    _, a, _ = yandex_raw
    store = tmp_path / "s"
    ingest_yandex(a, store, progress=False)
    with pytest.raises(StoreError, match=r"clip '\d+' \(train\) is already in .* version 1"):
        ingest_yandex(a, store, progress=False, append=True)
    assert V.version_numbers(store) == [1]
    r = CliRunner().invoke(main, ["ingest", "yandex", str(a), str(store), "--append"])
    assert r.exit_code != 0 and len(r.output.strip().splitlines()) == 1 and "already in" in r.output
    assert "Traceback" not in r.output


def test_fsd_append_grows_labels(yandex_raw, tmp_path: Path) -> None:
    """Multi-label clips: labels of appended clips decode to the same strings as in a joint ingest."""
    full, a, b = tmp_path / "full", tmp_path / "a", tmp_path / "b"
    synth_fsd(full, curated=10, noisy=4, classes=6, seed=2, test_clips=2, max_seconds=0.6, sample_rate=16000)
    for name in ("train_curated.csv", "train_noisy.csv"):
        _split_rows(full, a, b, name, lambda i: i % 2, ",")
    (a / "sample_submission.csv").write_bytes((full / "sample_submission.csv").read_bytes())
    for d in (a, b):
        _link_tree(full, d, ".wav")
    kw = {"progress": False, "sample_rate": 16000, "workers": 1}
    ingest_fsd(full, tmp_path / "union", **kw)
    ingest_fsd(a, tmp_path / "s", **kw)
    r = CliRunner().invoke(main, ["ingest", "fsd", str(b), str(tmp_path / "s"), "--append", "--sample-rate", "16000"])
    assert r.exit_code == 0, r.output
    got, want = Store(tmp_path / "s"), Store(tmp_path / "union")
    assert got.validate() == []

    def labels(s: Store) -> dict[str, list[str]]:
        lab, d = s.frames("train").labels(), s.dictionary("class")
        codes = lab.read("class")
        return {i: [d.values[c] for c in codes[lab.offsets[k]:lab.offsets[k + 1]]]
                for k, i in enumerate(s.ids("train"))}

    assert labels(got) == labels(want)
    assert sorted(got.ids("train")) == sorted(want.ids("train"))
    assert _values_by_id(got, "train", "curated") == _values_by_id(want, "train", "curated")
    assert got.frames("test").clips == want.frames("test").clips == 2
    # another dataset's clips are refused in one line
    r = CliRunner().invoke(main, ["ingest", "yandex", str(yandex_raw[2]), str(tmp_path / "s"), "--append"])
    assert r.exit_code == 1 and "is a fsdkaggle2019" in r.output.lower() and len(r.output.strip().splitlines()) == 1


def test_append_reports_converted_wavs_and_nan(yandex_raw, tmp_path: Path) -> None:
    """An append counts what loading converted (FSD: stereo, 8-bit) and the NaN values (Yandex) in its
    summary, as an ingest does."""
    import soundfile as sf

    full, a, b = tmp_path / "full", tmp_path / "a", tmp_path / "b"
    synth_fsd(full, curated=6, noisy=2, classes=4, seed=4, test_clips=0, max_seconds=0.3, sample_rate=16000)
    rows = _split_rows(full, a, b, "train_curated.csv", lambda i: i % 2, ",")
    _split_rows(full, a, b, "train_noisy.csv", lambda i: i % 2, ",")
    for d in (a, b):
        _link_tree(full, d, ".wav")
    ingest_fsd(a, tmp_path / "s", progress=False, sample_rate=16000, workers=1)
    appended = [b / "train_curated" / row[0] for row in rows]  # clips B lists
    for p, subtype in ((appended[0], "PCM_16"), (appended[1], "PCM_U8")):
        x, sr = sf.read(str(p), dtype="float32")
        p.unlink()  # a hard link to full/'s file: written anew
        sf.write(str(p), np.stack([x, -x], axis=1) if subtype == "PCM_16" else x, sr, subtype=subtype)
    r = CliRunner().invoke(main, ["ingest", "fsd", str(b), str(tmp_path / "s"), "--append", "--sample-rate", "16000"])
    assert r.exit_code == 0, r.output
    assert "note           1 stereo clip mixed down to mono (channels averaged)" in r.output
    assert "note           1 8-bit clip (unsigned PCM_U8) scaled to [-1, 1]" in r.output

    _, ya, yb = yandex_raw
    b = tmp_path / "yb"
    shutil.copytree(yb, b)  # copies: the fixture's files stay as they are
    src = _source(b)
    x = np.load(src.splits[0].clips[0].path)
    x[:2, 0] = np.nan
    np.save(src.splits[0].clips[0].path, x)
    ingest_yandex(ya, tmp_path / "y", progress=False)
    r = CliRunner().invoke(main, ["ingest", "yandex", str(b), str(tmp_path / "y"), "--append"])
    assert r.exit_code == 0, r.output
    assert "note           2 NaN values in 1 track (stored as the NaN code 255: they read back as NaN)" in r.output


def test_kill_9_during_an_append_leaves_the_parent_or_the_appended_version(yandex_raw, tmp_path: Path) -> None:
    """An audio append killed at random points: version 1 intact (and still validating), or version 2 whole."""
    import random
    import signal
    import subprocess
    import sys
    import time

    _, a, b = yandex_raw
    cmd = [sys.executable, "-m", "featurestore.cli", "ingest", "yandex", str(b)]
    probe = tmp_path / "probe"
    ingest_yandex(a, probe, progress=False)
    t = time.perf_counter()
    subprocess.run([*cmd, str(probe), "--append"], check=True, capture_output=True, timeout=300)
    duration = time.perf_counter() - t  # interpreter start included: kills land all over the run
    for seed in range(4):
        path = tmp_path / f"s{seed}"
        ingest_yandex(a, path, progress=False)
        v1 = {s: _frames_by_id(Store(path), s) for s in ("train", "test")}
        proc = subprocess.Popen([*cmd, str(path), "--append"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(random.Random(seed).uniform(0.5, 1.1) * duration)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        s = Store(path)
        assert s.version in (1, 2) and s.validate() == []
        old = Store(path, version=1)
        assert old.validate() == []
        for split, frames in v1.items():
            got = _frames_by_id(old, split)
            assert got.keys() == frames.keys() and all(np.array_equal(got[i], frames[i]) for i in frames)
        V.vacuum(path)  # the killed writer's tree is removed, the committed ones stay
        assert set(os.listdir(path / "_fstore" / "trees")) == {V.read_entry(path, n)["tree"]
                                                                for n in V.version_numbers(path)}
