"""Ingest of the synthetic Yandex / FSDKaggle2019 / speaker formats into frame sets, and bad input."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from featurestore.cli import main
from featurestore.ingest.fsd import LogMel, ingest_fsd, load_wav
from featurestore.ingest.speakers import ingest_speakers
from featurestore.ingest.yandex import ingest_yandex
from featurestore.store import InputError, Store, StoreError
from featurestore.store.frames import FrameSet
from featurestore.store.info import describe
from featurestore.synth.fsd import synth_fsd
from featurestore.synth.speakers import synth_speakers
from featurestore.synth.yandex import synth_yandex

YANDEX_KW = {"tracks": 40, "artists": 6, "test_tracks": 8, "seed": 3}
FSD_KW = {"curated": 10, "noisy": 8, "classes": 6, "seed": 5, "max_seconds": 0.8, "test_clips": 3}
SPEAKER_KW = {"speakers": 4, "utterances_per_speaker": 3, "test_utterances": 5, "seed": 7}


@pytest.fixture(scope="module")
def yandex_raw(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("yandex")
    synth_yandex(d, **YANDEX_KW)
    return d


@pytest.fixture(scope="module")
def fsd_raw(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("fsd")
    synth_fsd(d, **FSD_KW)
    return d


@pytest.fixture(scope="module")
def speakers_raw(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("speakers")
    synth_speakers(d, **SPEAKER_KW)
    return d


def _ingested(factory, fn, raw: Path, **kw) -> Store:
    path = factory.mktemp("store") / "s.fstore"
    fn(raw, path, progress=False, **kw)
    return Store(path)


@pytest.fixture(scope="module")
def yandex_store(yandex_raw, tmp_path_factory) -> Store:
    return _ingested(tmp_path_factory, ingest_yandex, yandex_raw, sample_frames=300)


@pytest.fixture(scope="module")
def fsd_store(fsd_raw, tmp_path_factory) -> Store:
    return _ingested(tmp_path_factory, ingest_fsd, fsd_raw, workers=2)


@pytest.fixture(scope="module")
def speakers_store(speakers_raw, tmp_path_factory) -> Store:
    return _ingested(tmp_path_factory, ingest_speakers, speakers_raw, sample_frames=500)


def _bounds(fs: FrameSet) -> np.ndarray:
    return np.array([q["bound"] for q in fs.meta["quantizers"]])


def _assert_within(fs: FrameSet, i: int, x: np.ndarray, bounds: np.ndarray | None = None) -> None:
    back = fs.dequantize(fs.clip(i)).astype(np.float64)
    assert back.shape == x.shape
    err = np.abs(back - x)
    limit = _bounds(fs) if bounds is None else bounds
    assert (err <= limit).all(), (i, float((err - limit).max()))


def _check_common(store: Store) -> None:
    assert store.validate() == []
    text = "\n".join(describe(store))
    assert "frames" in text and "bytes/frame" in text and "max|err|" in text
    train = store.frames("train")
    for name in store.tables:
        fs = store.frames(name)
        np.testing.assert_array_equal(fs.lut(), train.lut())  # test encoded with the train quantizers
        assert len(store.ids(name)) == fs.clips
        assert sum(q["clipped"] for q in fs.meta["quantizers"]) == 0 or not fs.meta["exact_range"]


# --- read back ----------------------------------------------------------------------------------

def _stored_order(df: pl.DataFrame, split: str) -> pl.DataFrame:
    """Train clips are stored grouped by artist id, meta order within an artist."""
    return df.sort("artistid", maintain_order=True) if split == "train" else df


def test_yandex_read_back(yandex_raw: Path, yandex_store: Store) -> None:
    _check_common(yandex_store)
    artists = yandex_store.dictionary("artist")
    for split, meta in (("train", "train_meta.tsv"), ("test", "test_meta.tsv")):
        df = _stored_order(pl.read_csv(yandex_raw / meta, separator="\t", infer_schema=False), split)
        fs = yandex_store.frames(split)
        assert fs.clips == df.height and fs.bins == 512
        assert fs.meta["exact_range"] is True
        assert yandex_store.ids(split) == df["trackid"].to_list()
        for i, rel in enumerate(df["archive_features_path"].to_list()):
            _assert_within(fs, i, np.load(yandex_raw / rel).T.astype(np.float64))
        np.testing.assert_array_equal(fs.column("fold"), [int(r.split("/")[0]) for r in df["archive_features_path"]])
        if split == "train":
            assert artists.decode(fs.column("artist")).tolist() == df["artistid"].to_list()
            codes = fs.column("artist")  # grouped: each artist's clips are one contiguous run
            assert np.unique(codes).size == 1 + int((codes[1:] != codes[:-1]).sum())
            assert fs.meta["sample_frames"] >= 300
        else:
            assert "artist" not in fs.clip_columns and fs.meta["quantizers_from"] == "train"


def test_yandex_one_pass_counts_clipping(yandex_raw: Path, tmp_path: Path) -> None:
    ingest_yandex(yandex_raw, tmp_path / "s", progress=False, two_pass=False, sample_frames=100)
    fs = Store(tmp_path / "s").frames("train")
    assert fs.meta["exact_range"] is False and fs.meta["sample_frames"] < fs.frames
    df = _stored_order(pl.read_csv(yandex_raw / "train_meta.tsv", separator="\t", infer_schema=False), "train")
    # every error is within the larger of the in-range and the clipped values' measured maxima
    measured = np.array([max(q["max_abs_error"], q["clipped_max_abs_error"]) for q in fs.meta["quantizers"]])
    lo, hi = fs.bank.ranges()
    clipped = 0
    for i, rel in enumerate(df["archive_features_path"].to_list()):
        x = np.load(yandex_raw / rel).T.astype(np.float64)
        _assert_within(fs, i, x, measured)
        clipped += int(((x < lo) | (x > hi)).sum())  # clipped: outside the range the quantizers were fitted on
    assert clipped == sum(q["clipped"] for q in fs.meta["quantizers"]) > 0


def _csv_labels(path: Path) -> list[tuple[str, list[str]]]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    return [(r[0], r[1].split(",")) for r in rows]


def test_fsd_read_back(fsd_raw: Path, fsd_store: Store) -> None:
    _check_common(fsd_store)
    classes = (fsd_raw / "sample_submission.csv").read_text().splitlines()[0].split(",")[1:]
    assert fsd_store.dictionary("class").values == classes
    rows = [(f"train_curated/{f}", lab, 1) for f, lab in _csv_labels(fsd_raw / "train_curated.csv")]
    rows += [(f"train_noisy/{f}", lab, 0) for f, lab in _csv_labels(fsd_raw / "train_noisy.csv")]
    fs = fsd_store.frames("train")
    assert fs.clips == len(rows) and fs.bins == 64
    assert fsd_store.ids("train") == [r[0].split("/")[1] for r in rows]
    np.testing.assert_array_equal(fs.column("curated"), [r[2] for r in rows])
    lab = fs.labels()
    codes = lab.read("class")
    decoded = [classes[c] for c in codes]
    assert [decoded[lab.offsets[i] : lab.offsets[i + 1]] for i in range(fs.clips)] == [r[1] for r in rows]
    mel = LogMel()
    assert fs.meta["logmel"] == mel.config
    for i, (rel, _, _) in enumerate(rows):
        x = mel(load_wav(fsd_raw / rel, 44100))
        assert len(x) == 1 + sf.info(str(fsd_raw / rel)).frames // 220
        _assert_within(fs, i, x.astype(np.float64))
    test = fsd_store.frames("test")
    assert test.clips == FSD_KW["test_clips"] and test.labels() is None
    assert fsd_store.ids("test") == sorted(p.name for p in (fsd_raw / "test").iterdir())
    for i, name in enumerate(fsd_store.ids("test")):
        x = mel(load_wav(fsd_raw / "test" / name, 44100)).astype(np.float64)
        measured = np.array([max(q["max_abs_error"], q["clipped_max_abs_error"]) for q in test.meta["quantizers"]])
        _assert_within(test, i, x, np.maximum(measured, _bounds(test)))


def test_fsd_without_submission_uses_label_order(fsd_raw: Path, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(fsd_raw, raw)
    (raw / "sample_submission.csv").unlink()
    s = ingest_fsd(raw, tmp_path / "s", progress=False, two_pass=True, workers=1)
    assert any("class list" in n for n in s.notes)
    st = Store(tmp_path / "s")
    assert set(st.tables) == {"train"} and st.validate() == []
    order: list[str] = []
    for name in ("train_curated.csv", "train_noisy.csv"):
        for _, labels in _csv_labels(raw / name):
            order += [x for x in labels if x not in order]
    assert st.dictionary("class").values == order
    assert st.frames("train").meta["exact_range"] is True


def test_speakers_read_back(speakers_raw: Path, speakers_store: Store) -> None:
    _check_common(speakers_store)
    root = speakers_raw / "Dataset"
    mapping = json.loads((root / "mapping.json").read_text())["speaker2id"]
    meta = json.loads((root / "metadata.json").read_text())
    test = json.loads((root / "testdata.json").read_text())
    labels = json.loads((root / "test_labels.json").read_text())
    spk = speakers_store.dictionary("speaker")
    assert spk.values == sorted(mapping, key=mapping.get)
    train_rows = [(u["feature_path"], s) for s, us in meta["speakers"].items() for u in us]
    test_rows = [(u["feature_path"], labels[u["feature_path"]]) for u in test["utterances"]]
    for split, rows in (("train", train_rows), ("test", test_rows)):
        fs = speakers_store.frames(split)
        assert speakers_store.ids(split) == [r[0] for r in rows] and fs.bins == 40
        assert spk.decode(fs.column("speaker")).tolist() == [r[1] for r in rows]
        np.testing.assert_array_equal(fs.column("speaker"), [mapping[r[1]] for r in rows])
        for i, (fp, _) in enumerate(rows):
            _assert_within(fs, i, torch.load(root / fp, weights_only=True).numpy().astype(np.float64))
    assert speakers_store.tables["test"]["labelled"] is True


def test_speakers_without_test_labels(speakers_raw: Path, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(speakers_raw, raw)
    (raw / "Dataset" / "test_labels.json").unlink()
    ingest_speakers(raw / "Dataset", tmp_path / "s", progress=False)  # RAW_DIR may be Dataset/ itself
    st = Store(tmp_path / "s")
    assert st.tables["test"]["labelled"] is False and st.frames("test").clip_columns == {}
    assert st.validate() == []


def test_cli_synth_ingest_info_validate(tmp_path: Path) -> None:
    runner = CliRunner()
    cases = {
        "yandex": ["--tracks", "12", "--artists", "3", "--test-tracks", "3"],
        "fsd": ["--curated", "4", "--noisy", "3", "--classes", "4", "--test-clips", "2", "--max-seconds", "0.4"],
        "speakers": ["--speakers", "3", "--utterances", "2", "--test-utterances", "2"],
    }
    for name, opts in cases.items():
        raw, store = tmp_path / f"{name}-raw", tmp_path / f"{name}.fstore"
        res = runner.invoke(main, ["synth", name, str(raw), "--seed", "1", *opts])
        assert res.exit_code == 0, res.output
        res = runner.invoke(main, ["ingest", name, str(raw), str(store)])
        assert res.exit_code == 0, res.output
        assert "clips" in res.output and "bytes/frame" in res.output and "smaller than float32" in res.output
        res = runner.invoke(main, ["ingest", name, str(raw), str(store)])
        assert res.exit_code == 1 and "already exists" in res.output
        res = runner.invoke(main, ["ingest", name, str(raw), str(store), "--overwrite"])
        assert res.exit_code == 0, res.output
        res = runner.invoke(main, ["info", str(store)])
        assert res.exit_code == 0 and "table train: frames" in res.output and "per-bin" in res.output
        res = runner.invoke(main, ["validate", str(store)])
        assert res.exit_code == 0 and "valid" in res.output


def test_validate_catches_bad_frames(speakers_raw: Path, tmp_path: Path) -> None:
    ingest_speakers(speakers_raw, tmp_path / "s", progress=False)
    s = Store(tmp_path / "s")
    s.manifest["tables"]["train"]["frames"] += 1
    assert any("manifest says" in p for p in s.validate(checksums=False))
    s = Store(tmp_path / "s")
    s._dicts["speaker"] = type(s.dictionary("speaker"))(["only-one"])
    assert any("clips/speaker" in p and "out of range" in p for p in s.validate(checksums=False))
    with pytest.raises(StoreError, match="no frames table"):
        s.frames("nope")
    shard = Store(tmp_path / "s").frames("test").shard_path
    with open(shard, "r+b") as fh:
        fh.truncate(shard.stat().st_size - 4)
    s = Store(tmp_path / "s")
    assert any("checksum" in p or "size" in p for p in s.validate())
    assert any("test/frames: shard file has" in p for p in s.validate(checksums=False))


# --- bad input ----------------------------------------------------------------------------------

def _edit(path: Path, fn: Callable[[list[str]], list[str]]) -> None:
    path.write_text("".join(fn(path.read_text().splitlines(keepends=True))))


def _first_npy(raw: Path, meta: str = "train_meta.tsv") -> Path:
    return raw / (raw / meta).read_text().splitlines()[1].split("\t")[-1]


def _save_first(arr) -> Callable[[Path], Path]:
    def mutate(raw: Path) -> Path:
        p = _first_npy(raw)
        p.unlink()
        with open(p, "wb") as fh:  # np.save(path) would append .npy to an odd name; keep the exact path
            np.save(fh, arr)
        return p
    return mutate


def _y_missing(raw: Path) -> Path:
    p = _first_npy(raw, "test_meta.tsv")
    p.unlink()
    return p


def _y_garbage(raw: Path) -> Path:
    p = _first_npy(raw)
    p.write_bytes(b"definitely not numpy")
    return p


def _y_duplicate(raw: Path) -> Path:
    first = (raw / "train_meta.tsv").read_text().splitlines()[1].split("\t")
    _edit(raw / "test_meta.tsv", lambda ls: [*ls, f"{first[0]}\t{first[2]}\n"])
    return raw / "test_meta.tsv"


def _y_fields(raw: Path) -> Path:
    _edit(raw / "train_meta.tsv", lambda ls: [*ls[:2], "\t".join(ls[2].split("\t")[:2]) + "\n", *ls[3:]])
    return raw / "train_meta.tsv"


def _y_empty(raw: Path) -> Path:
    _edit(raw / "train_meta.tsv", lambda ls: [ls[0], "{}\t\t{}".format(*ls[1].split("\t")[::2]), *ls[2:]])
    return raw / "train_meta.tsv"


YANDEX_CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing npy": (_y_missing, "feature file not found"),
    "garbage npy": (_y_garbage, "not a .npy file"),
    "1-D": (_save_first(np.zeros(512 * 70, np.float32)), r"is not 2-D"),
    "3-D": (_save_first(np.zeros((512, 70, 1), np.float32)), r"is not 2-D"),
    "first dim": (_save_first(np.zeros((511, 70), np.float32)), r"first dimension 511 != 512"),
    "T too long": (_save_first(np.zeros((512, 82), np.float32)), r"T = 82 outside 1..81"),
    "T zero": (_save_first(np.zeros((512, 0), np.float32)), r"T = 0 outside 1..81"),
    "int dtype": (_save_first(np.zeros((512, 70), np.int32)), r"dtype int32 is not floating point"),
    "duplicate id": (_y_duplicate, r"line 10, column 'trackid': track id '\d+' appears twice"),
    "field count": (_y_fields, r"line 3: 2 tab-separated fields, header has 3"),
    "empty field": (_y_empty, r"line 2, column 'artistid': empty value"),
}


def _f_first(raw: Path, split: str = "train_curated") -> Path:
    return raw / split / _csv_labels(raw / f"{split}.csv")[0][0]


def _f_rewrite(**kw) -> Callable[[Path], Path]:
    def mutate(raw: Path) -> Path:
        p = _f_first(raw, "train_noisy")
        x, sr = sf.read(str(p), dtype="float32")
        sf.write(str(p), x[: kw.get("n", len(x))], kw.get("rate", sr), subtype=kw.get("subtype", "PCM_16"),
                 format="WAV")
        return p
    return mutate


def _f_missing(raw: Path) -> Path:
    p = _f_first(raw)
    p.unlink()
    return p


def _f_missing_test(raw: Path) -> Path:
    p = sorted((raw / "test").iterdir())[0]
    p.unlink()
    return p


def _f_garbage(raw: Path) -> Path:
    p = _f_first(raw, "train_noisy")
    p.write_bytes(b"RIFF0000WAVEjunk")
    return p


def _f_line(line: str, csv_name: str = "train_curated.csv", at: int = 2) -> Callable[[Path], Path]:
    def mutate(raw: Path) -> Path:
        _edit(raw / csv_name, lambda ls: [*ls[: at - 1], line, *ls[at - 1 :]])  # becomes line ``at``
        return raw / csv_name
    return mutate


def _f_duplicate(raw: Path) -> Path:
    first = (raw / "train_curated.csv").read_text().splitlines()[1]
    _edit(raw / "train_noisy.csv", lambda ls: [*ls, first + "\n"])
    return raw / "train_noisy.csv"


FSD_CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing wav": (_f_missing, "wav file not found"),
    "missing test wav": (_f_missing_test, "wav file not found"),
    "garbage wav": (_f_garbage, "not a readable audio file"),
    "float wav": (_f_rewrite(subtype="FLOAT"), "subtype FLOAT is not PCM"),
    "empty wav": (_f_rewrite(n=0), r"empty wav"),
    "sample rate": (_f_rewrite(rate=22050), r"sample rate 22050 Hz, expected 44100 Hz"),
    "unknown label": (_f_line("aaaaaaaa.wav,Not_a_class\n"),
                      r"line 2, column 'labels': label 'Not_a_class' is not a class of sample_submission.csv"),
    "three fields": (_f_line("aaaaaaaa.wav,Bark,Meow\n", at=3), r"line 3: 3 comma-separated fields, header has 2"),
    "empty label": (_f_line('aaaaaaaa.wav,"Bark,"\n', "train_noisy.csv"), r"line 2, column 'labels': empty label"),
    "open quote": (_f_line('aaaaaaaa.wav,"Bark\n'), r"line 2: malformed CSV record"),
    "bad header": (lambda r: (_edit(r / "train_noisy.csv", lambda ls: ["name,labels\n", *ls[1:]]),
                              r / "train_noisy.csv")[1], r"line 1: header"),
    "duplicate fname": (_f_duplicate, r"column 'fname': fname '[0-9a-f]+\.wav' appears twice"),
}


def _s_root(raw: Path) -> Path:
    return raw / "Dataset"


def _s_first(raw: Path) -> tuple[Path, int]:
    meta = json.loads((_s_root(raw) / "metadata.json").read_text())
    u = next(iter(meta["speakers"].values()))[0]
    return _s_root(raw) / u["feature_path"], u["mel_len"]


def _s_save(make) -> Callable[[Path], Path]:
    def mutate(raw: Path) -> Path:
        p, n = _s_first(raw)
        torch.save(make(n), p)
        return p
    return mutate


def _s_missing(raw: Path) -> Path:
    p, _ = _s_first(raw)
    p.unlink()
    return p


def _s_garbage(raw: Path) -> Path:
    p, _ = _s_first(raw)
    p.write_bytes(b"not a zip, not a pickle")
    return p


def _s_json(name: str, fn: Callable[[dict], dict]) -> Callable[[Path], Path]:
    def mutate(raw: Path) -> Path:
        p = _s_root(raw) / name
        p.write_text(json.dumps(fn(json.loads(p.read_text()))))
        return p
    return mutate


def _rename_first_speaker(meta: dict) -> dict:
    first = next(iter(meta["speakers"]))
    meta["speakers"]["id99999"] = meta["speakers"].pop(first)
    return meta


def _bad_test_label(labels: dict) -> dict:
    labels[next(iter(labels))] = "id99999"
    return labels


SPEAKER_CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing pt": (_s_missing, "feature file not found"),
    "garbage pt": (_s_garbage, "not a readable torch file"),
    "not a tensor": (_s_save(lambda n: {"x": torch.zeros(n, 40)}), "holds a dict, not a tensor"),
    "1-D": (_s_save(lambda n: torch.zeros(n * 40)), r"a 1-D torch.float32 tensor, expected a 2-D float tensor"),
    "int tensor": (_s_save(lambda n: torch.zeros((n, 40), dtype=torch.int64)), r"2-D torch.int64 tensor"),
    "mel_len": (_s_save(lambda n: torch.zeros(n - 1, 40)), r"frames, metadata.json says mel_len = \d+"),
    "n_mels": (_s_save(lambda n: torch.zeros(n, 41)), r"41 mel bands, metadata.json says n_mels = 40"),
    "unknown speaker": (_s_json("metadata.json", _rename_first_speaker), r"speaker 'id99999' is not in mapping.json"),
    "unknown test speaker": (_s_json("test_labels.json", _bad_test_label), r"speaker 'id99999' .* not in mapping"),
    "test n_mels": (_s_json("testdata.json", lambda d: {**d, "n_mels": 41}), r"n_mels 41 but metadata.json says 40"),
    "bad json": (lambda r: ((_s_root(r) / "mapping.json").write_text("{oops"), _s_root(r) / "mapping.json")[1],
                 r"line 1: not valid JSON"),
}

INGESTS = {"yandex": ingest_yandex, "fsd": ingest_fsd, "speakers": ingest_speakers}
CASES = [(ds, name) for ds, cases in (("yandex", YANDEX_CASES), ("fsd", FSD_CASES), ("speakers", SPEAKER_CASES))
         for name in cases]


@pytest.fixture(scope="module")
def raws(yandex_raw, fsd_raw, speakers_raw) -> dict[str, Path]:
    return {"yandex": yandex_raw, "fsd": fsd_raw, "speakers": speakers_raw}


@pytest.mark.parametrize(("dataset", "case"), CASES, ids=[f"{d}-{c}" for d, c in CASES])
@pytest.mark.parametrize("two_pass", [True, False], ids=["two-pass", "one-pass"])
def test_bad_input_rejected_and_nothing_written(raws, tmp_path: Path, dataset: str, case: str,
                                                two_pass: bool) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(raws[dataset], raw)
    mutate, pattern = {"yandex": YANDEX_CASES, "fsd": FSD_CASES, "speakers": SPEAKER_CASES}[dataset][case]
    bad_file = mutate(raw)
    target = tmp_path / "out.fstore"
    with pytest.raises(InputError, match=pattern) as exc:
        INGESTS[dataset](raw, target, progress=False, two_pass=two_pass)
    assert Path(exc.value.path) == bad_file
    assert str(bad_file) in str(exc.value)
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]  # no staging directory left behind


def test_existing_store_untouched(speakers_raw: Path, tmp_path: Path) -> None:
    target = tmp_path / "s"
    ingest_speakers(speakers_raw, target, progress=False)
    before = (target / "manifest.json").read_bytes()
    with pytest.raises(StoreError, match="already exists"):
        ingest_speakers(speakers_raw, target, progress=False)
    raw = tmp_path / "raw"
    shutil.copytree(speakers_raw, raw)
    _s_missing(raw)
    with pytest.raises(InputError):
        ingest_speakers(raw, target, progress=False, overwrite=True, two_pass=False)
    assert (target / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw", "s"]
