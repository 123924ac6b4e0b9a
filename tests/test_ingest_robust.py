"""Real-release quirks (WAVEX, truncated wavs, blank TSV tails, zero noisy clips), synth into a used
folder, and failures that must be one ``Error:`` line through the CLI: full disk, damaged stores."""

from __future__ import annotations

import errno
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from featurestore.cli import main
from featurestore.ingest.builder import human_bytes
from featurestore.ingest.fsd import ingest_fsd, load_wav, read_wav
from featurestore.ingest.yandex import YandexSource, ingest_yandex
from featurestore.store import FstoreError, InputError, Store, versions
from featurestore.store.dictionary import Dictionary, IdListWriter
from featurestore.synth.fsd import synth_fsd
from featurestore.synth.speakers import synth_speakers
from featurestore.synth.spotify import synth_spotify
from featurestore.synth.yandex import synth_yandex

SR = 44100


def _pcm16(n: int = 4410, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).uniform(-0.5, 0.5, n) * 32767).astype(np.int16)


def _riff(fmt: bytes, data: bytes, extra_chunks: bytes = b"") -> bytes:
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + extra_chunks + b"data" + \
        struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


# --- wav files as FSDKaggle2019 ships them -------------------------------------------------------

def test_wavex_16bit_mono_accepted(tmp_path: Path) -> None:
    x = _pcm16()
    pcm_guid = struct.pack("<IHH", 1, 0, 0x10) + bytes([0x80, 0, 0, 0xAA, 0, 0x38, 0x9B, 0x71])
    fmt = struct.pack("<HHIIHH", 0xFFFE, 1, SR, SR * 2, 2, 16) + struct.pack("<HHI", 22, 16, 0x4) + pcm_guid
    p = tmp_path / "ext.wav"
    p.write_bytes(_riff(fmt, x.tobytes(), b"fact" + struct.pack("<II", 4, len(x))))
    assert sf.info(str(p)).format == "WAVEX"
    np.testing.assert_array_equal(load_wav(p, SR), x.astype(np.float32) / 32768)
    q = tmp_path / "sf.wav"  # and as soundfile writes it
    sf.write(q, x, SR, subtype="PCM_16", format="WAVEX")
    np.testing.assert_array_equal(load_wav(q, SR), x.astype(np.float32) / 32768)


def test_wav_truncated_mid_data_rejected(tmp_path: Path) -> None:
    x = _pcm16()
    fmt = struct.pack("<HHIIHH", 1, 1, SR, SR * 2, 2, 16)
    whole = _riff(fmt, x.tobytes())
    p = tmp_path / "cut.wav"
    p.write_bytes(whole[: len(whole) - 1000])
    with pytest.raises(InputError, match=r"cut.wav: truncated wav: the header promises 8820 bytes of samples, "
                                         r"the file holds 7820"):
        load_wav(p, SR)
    p.write_bytes(whole)
    assert len(load_wav(p, SR)) == len(x)


def test_fsd_ingest_rejects_truncated_clip(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    synth_fsd(raw, curated=4, noisy=2, classes=3, max_seconds=0.3, test_clips=0)
    victim = sorted((raw / "train_noisy").iterdir())[0]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 100])
    with pytest.raises(InputError, match="truncated wav") as exc:
        ingest_fsd(raw, tmp_path / "s", progress=False, workers=1)
    assert Path(exc.value.path) == victim and not (tmp_path / "s").exists()


def test_fsd_zero_noisy_clips(tmp_path: Path) -> None:
    """synth --noisy 0 writes a header-only train_noisy.csv; ingest reads it as zero noisy clips."""
    raw = tmp_path / "raw"
    synth_fsd(raw, curated=5, noisy=0, classes=3, max_seconds=0.3, test_clips=2)
    assert (raw / "train_noisy.csv").read_text() == "fname,labels\n"
    summary = ingest_fsd(raw, tmp_path / "s", progress=False, workers=1)
    fs = Store(tmp_path / "s").frames("train")
    assert fs.clips == 5 and summary.clips == {"train": 5, "test": 2}
    assert (fs.column("curated") == 1).all()
    (raw / "train_curated.csv").write_text("fname,labels\n")  # but no curated clips at all is an error
    with pytest.raises(InputError, match=r"train_curated.csv: no data rows"):
        ingest_fsd(raw, tmp_path / "s2", progress=False)


def _rewrite_wav(p: Path, channels: int = 1, subtype: str = "PCM_16") -> np.ndarray:
    """Write ``p`` again (a new file: it may be a hard link) with ``channels`` channels (the first one as it
    was, the others scaled) and ``subtype``; returns the samples written, (n, channels)."""
    x, sr = sf.read(str(p), dtype="float32")
    x = np.stack([x * (1.0 - 0.25 * c) for c in range(channels)], axis=1)
    p.unlink()
    sf.write(str(p), x, sr, subtype=subtype, format="WAV")
    return sf.read(str(p), dtype="float32", always_2d=True)[0]


def test_read_wav_says_what_it_converted(tmp_path: Path) -> None:
    p = tmp_path / "a.wav"
    sf.write(p, _pcm16(), SR, subtype="PCM_16", format="WAV")
    x = _rewrite_wav(p, channels=2, subtype="PCM_U8")
    mono, counts = read_wav(p, SR)
    np.testing.assert_array_equal(mono, x.mean(axis=1))  # the channels averaged, 8-bit scaled to [-1, 1]
    assert counts == {"channels:2": 1, "subtype:PCM_U8": 1}
    sf.write(p, _pcm16(), SR, subtype="PCM_16", format="WAV")
    assert read_wav(p, SR)[1] == {}  # the release's format: nothing converted


def test_fsd_ingest_reports_converted_wavs(tmp_path: Path) -> None:
    """Stereo, 3-channel, 8-bit and 24-bit wavs are converted as before, and each conversion is counted in
    the summary (train and test splits alike)."""
    raw = tmp_path / "raw"
    synth_fsd(raw, curated=5, noisy=2, classes=3, max_seconds=0.3, test_clips=2)
    curated, test = sorted((raw / "train_curated").iterdir()), sorted((raw / "test").iterdir())
    _rewrite_wav(curated[0], channels=2)
    _rewrite_wav(curated[1], subtype="PCM_U8")
    _rewrite_wav(curated[2], channels=2, subtype="PCM_U8")
    _rewrite_wav(test[0], channels=3, subtype="PCM_24")
    r = CliRunner().invoke(main, ["ingest", "fsd", str(raw), str(tmp_path / "s.fstore"), "--two-pass"])
    assert r.exit_code == 0, r.output
    notes = [line.strip() for line in r.output.splitlines() if line.strip().startswith("note")]
    assert notes[-4:] == [
        "note           2 stereo clips mixed down to mono (channels averaged)",
        "note           1 3-channel clip mixed down to mono (channels averaged)",
        "note           1 24-bit clip (PCM_24) read as float32 in [-1, 1] (v / 2^23: exact)",
        "note           2 8-bit clips (unsigned PCM_U8) scaled to [-1, 1] as (v - 128) / 128: 256 levels, "
        "not 16-bit's 65536",
    ], r.output


def test_yandex_nan_and_infinity_are_counted_and_read_back_as_nan(tmp_path: Path) -> None:
    raw, store = tmp_path / "raw", tmp_path / "s.fstore"
    synth_yandex(raw, tracks=12, artists=3, test_tracks=3, seed=1)
    source = YandexSource(raw)
    source.read()
    train, test = source.splits[0].clips, source.splits[1].clips
    edits = [(train[0], [(0, 0, np.nan), (5, 1, np.nan), (7, 2, np.nan)]), (train[1], [(6, 0, np.nan)]),
             (test[0], [(3, 0, np.inf), (4, 0, -np.inf)])]
    changed = {}
    for clip, cells in edits:
        a = np.load(clip.path)
        for i, j, v in cells:
            a[i, j] = v
        clip.path.unlink()
        np.save(clip.path, a)
        changed[clip.id] = a.T
    r = CliRunner().invoke(main, ["ingest", "yandex", str(raw), str(store)])
    assert r.exit_code == 0, r.output
    assert "note           4 NaN values in 2 tracks (stored as the NaN code 255: they read back as NaN)" in r.output
    assert ("note           2 infinite values in 1 track stored as the NaN code 255: they read back as NaN, not as "
            "infinity") in r.output
    s = Store(store)  # the notes tell the truth: those values read back as NaN, the others are finite
    for split in ("train", "test"):
        fs, ids = s.frames(split), list(s.ids(split))
        for tid, a in changed.items():
            if tid in ids:
                back = fs.dequantize(fs.clip(ids.index(tid)))
                np.testing.assert_array_equal(np.isnan(back), ~np.isfinite(a))
    r = CliRunner().invoke(main, ["ingest", "yandex", str(raw), str(tmp_path / "one.fstore"), "--one-pass"])
    assert r.exit_code == 0 and "4 NaN values in 2 tracks" in r.output, r.output


def test_yandex_tsv_with_blank_tail_and_crlf(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    synth_yandex(raw, tracks=12, artists=3, test_tracks=3, seed=1)
    ref = ingest_yandex(raw, tmp_path / "ref", progress=False)
    for name in ("train_meta.tsv", "test_meta.tsv"):
        p = raw / name
        p.write_bytes(("\ufeff" + p.read_text().replace("\n", "\r\n") + "\r\n").encode())
    got = ingest_yandex(raw, tmp_path / "s", progress=False)
    assert got.clips == ref.clips and got.frames == ref.frames
    assert Store(tmp_path / "s").ids("train") == Store(tmp_path / "ref").ids("train")


# --- synth into a used folder ----------------------------------------------------------------------

SYNTHS = {
    "spotify": lambda out, **kw: synth_spotify(out, sessions=30, tracks=20, train_files=1, **kw),
    "yandex": lambda out, **kw: synth_yandex(out, tracks=6, artists=2, test_tracks=2, **kw),
    "fsd": lambda out, **kw: synth_fsd(out, curated=3, noisy=1, classes=2, max_seconds=0.3, test_clips=1, **kw),
    "speakers": lambda out, **kw: synth_speakers(out, speakers=2, utterances_per_speaker=1, test_utterances=1,
                                                 **kw),
}


@pytest.mark.parametrize("name", list(SYNTHS))
def test_synth_refuses_non_empty_folder_unless_overwrite(tmp_path: Path, name: str) -> None:
    out = tmp_path / "out"
    SYNTHS[name](out)
    first = sorted(p.relative_to(out) for p in out.rglob("*"))
    stale = out / "stale" / "log_9_20990101_000000000000.csv"
    stale.parent.mkdir()
    stale.write_text("left over\n")
    with pytest.raises(FstoreError, match=rf"{out}: folder is not empty \(pass --overwrite"):
        SYNTHS[name](out)
    assert stale.exists()
    SYNTHS[name](out, overwrite=True)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == first  # the stale file is gone
    empty = tmp_path / "empty"
    empty.mkdir()
    SYNTHS[name](empty)  # an existing empty folder is fine


# --- one-line errors through the CLI ---------------------------------------------------------------

def _one_error_line(result, names: Path) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)  # not an escaped exception
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and str(names) in errors[0], result.output
    return errors[0]


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture(scope="module")
def speakers_raw(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("spk")
    synth_speakers(d, speakers=3, utterances_per_speaker=2, test_utterances=2, seed=1)
    return d


@pytest.mark.parametrize("phase", ["encode", "commit"])
@pytest.mark.parametrize("dataset", ["speakers", "spotify"])
def test_full_disk_is_one_line_and_leaves_nothing(dataset: str, phase: str, speakers_raw: Path, raw: Path,
                                                  tmp_path: Path, monkeypatch) -> None:
    # encode: while tables are written (id lists); commit: dictionaries, written at the end
    monkeypatch.setattr(*{"encode": (IdListWriter, "append"), "commit": (Dictionary, "write")}[phase], _disk_full)
    src = {"speakers": speakers_raw, "spotify": raw}[dataset]
    target = tmp_path / "out" / "s.fstore"
    result = CliRunner().invoke(main, ["ingest", dataset, str(src), str(target)])
    line = _one_error_line(result, target)
    assert "No space left on device" in line
    assert "vacuum" not in line  # a new store: no version a vacuum could expire
    assert list((tmp_path / "out").iterdir()) == []  # staging removed, nothing committed


def test_full_disk_keeps_existing_store(speakers_raw: Path, tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "s.fstore"
    CliRunner().invoke(main, ["ingest", "speakers", str(speakers_raw), str(target)])
    before = (target / "manifest.json").read_bytes()
    monkeypatch.setattr(Dictionary, "write", _disk_full)
    result = CliRunner().invoke(main, ["ingest", "speakers", str(speakers_raw), str(target), "--overwrite"])
    line = _one_error_line(result, target)
    assert "vacuum" not in line  # one version: a vacuum would free nothing, so it is not suggested
    assert (target / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.fstore"]


def _disk_usage(root: Path) -> int:
    """Allocated bytes under ``root``: each file once, however many hard links it has; directories too."""
    seen, total = set(), 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def test_full_disk_says_what_vacuum_would_free(speakers_raw: Path, tmp_path: Path, monkeypatch) -> None:
    """Three versions: the one line names the vacuum that frees space and how much; the dry run behind
    the figure removes nothing, and the vacuum then frees exactly that (a dead writer's tree included)."""
    target = tmp_path / "s.fstore"
    for args in ([], ["--overwrite"], ["--overwrite"]):
        r = CliRunner().invoke(main, ["ingest", "speakers", str(speakers_raw), str(target), *args])
        assert r.exit_code == 0, r.output
    plan = versions.plan_vacuum(target, keep=1, grace_seconds=0)
    freed = plan.freed_bytes()
    assert plan.expire == [1, 2] and freed > 0

    monkeypatch.setattr(Dictionary, "write", _disk_full)
    result = CliRunner().invoke(main, ["ingest", "speakers", str(speakers_raw), str(target), "--overwrite"])
    line = _one_error_line(result, target)
    assert line == (f"Error: {target}: cannot write the store (No space left on device); nothing was written. "
                    f"`fstore vacuum {target} --keep 1 --grace-hours 0` would free {human_bytes(freed)}.")
    monkeypatch.undo()
    assert versions.version_numbers(target) == [1, 2, 3]  # the dry run removed nothing

    dead = versions.new_tree(target).rename(target / "_fstore" / "trees" / "1700000000-999999999-deadbeef")
    (dead / "partial").write_bytes(b"x" * 100_000)
    plan = versions.plan_vacuum(target, keep=1, grace_seconds=0)
    assert dead.name in plan.trees and plan.freed_bytes() >= freed + 100_000 and dead.exists()
    freed = plan.freed_bytes()
    before = _disk_usage(target)
    r = CliRunner().invoke(main, ["vacuum", str(target), "--keep", "1", "--grace-hours", "0"])
    assert r.exit_code == 0 and "versions kept: [3]" in r.output, r.output
    assert before - _disk_usage(target) == freed  # the figure is what the vacuum frees
    assert Store(target).validate() == []
    assert versions.plan_vacuum(target, keep=1, grace_seconds=0).freed_bytes() == 0


def test_vacuum_dry_run_counts_only_files_it_would_free(speakers_raw: Path, tmp_path: Path) -> None:
    """A file of an expired version that is also linked from elsewhere (as a kept version's files are, after
    an append) frees nothing; one linked only from there frees its blocks."""
    target = tmp_path / "s.fstore"
    assert CliRunner().invoke(main, ["ingest", "speakers", str(speakers_raw), str(target)]).exit_code == 0
    old = versions.tree_path(target, versions.read_entry(target, 1))
    (old / "shared").write_bytes(b"y" * 50_000)
    os.link(old / "shared", tmp_path / "shared-elsewhere")
    (old / "only-here").write_bytes(b"z" * 70_000)
    r = CliRunner().invoke(main, ["ingest", "speakers", str(speakers_raw), str(target), "--overwrite"])
    assert r.exit_code == 0, r.output
    shared = os.lstat(old / "shared").st_blocks * 512
    freed = versions.plan_vacuum(target, keep=1, grace_seconds=0).freed_bytes()
    os.unlink(tmp_path / "shared-elsewhere")  # now only the expired version links to it
    assert versions.plan_vacuum(target, keep=1, grace_seconds=0).freed_bytes() == freed + shared > 0
    os.link(old / "shared", tmp_path / "shared-elsewhere")
    before = _disk_usage(tmp_path)
    versions.vacuum(target, keep=1, grace_seconds=0)
    assert before - _disk_usage(tmp_path) == freed >= 70_000
    assert (tmp_path / "shared-elsewhere").read_bytes() == b"y" * 50_000


@pytest.fixture
def store_copy(speakers_raw: Path, tmp_path: Path) -> Path:
    target = tmp_path / "s.fstore"
    result = CliRunner().invoke(main, ["ingest", "speakers", str(speakers_raw), str(target)])
    assert result.exit_code == 0, result.output
    return target


def test_info_on_corrupted_dictionary(store_copy: Path) -> None:
    bad = store_copy / "dicts" / "speaker.parquet"
    bad.write_bytes(b"PAR1 not really parquet")
    line = _one_error_line(CliRunner().invoke(main, ["info", str(store_copy)]), bad)
    assert "unreadable dictionary" in line


@pytest.mark.parametrize("command", ["info", "validate"])
def test_store_without_root_zarr_json(store_copy: Path, command: str) -> None:
    (store_copy / "zarr.json").unlink()
    line = _one_error_line(CliRunner().invoke(main, [command, str(store_copy)]), store_copy / "zarr.json")
    assert "None" not in line and "damaged store" in line


def test_store_without_table_group(store_copy: Path) -> None:
    shutil.rmtree(store_copy / "test")
    result = CliRunner().invoke(main, ["validate", "--no-checksums", str(store_copy)])
    line = _one_error_line(result, store_copy / "test")
    assert "table 'test'" in line
