"""Tests for the synthetic Yandex / FSDKaggle2019 / speaker data generators (featurestore.synth)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import soundfile as sf
import torch

from featurestore.synth.audio_common import SynthSummary, hex_ids
from featurestore.synth.fsd import FSD_CLASSES, fsd_class_bands, fsd_class_names, synth_fsd
from featurestore.synth.speakers import synth_speakers
from featurestore.synth.yandex import synth_yandex

YANDEX_KW = {"tracks": 150, "artists": 15, "test_tracks": 30, "seed": 3}
FSD_KW = {"curated": 48, "noisy": 40, "classes": 12, "seed": 5, "max_seconds": 1.0, "test_clips": 6}
SPEAKER_KW = {"speakers": 8, "utterances_per_speaker": 5, "test_utterances": 16, "seed": 7}


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _check_summary(s: SynthSummary, root: Path) -> None:
    files = [p for p in root.rglob("*") if p.is_file()]
    assert s.files == len(files)
    assert s.bytes == sum(p.stat().st_size for p in files)


def _loo_nearest_centroid(x: np.ndarray, y: np.ndarray) -> float:
    """Leave-one-out nearest-centroid accuracy over items whose class has >= 2 items."""
    classes, inv = np.unique(y, return_inverse=True)
    counts = np.bincount(inv).astype(np.float64)
    sums = np.zeros((len(classes), x.shape[1]))
    np.add.at(sums, inv, x)
    hits, total = 0, 0
    for i in np.flatnonzero(counts[inv] >= 2):
        s, n = sums.copy(), counts.copy()
        s[inv[i]] -= x[i]
        n[inv[i]] -= 1
        keep = n > 0
        cent = s[keep] / n[keep, None]
        hits += int(np.flatnonzero(keep)[np.argmin(((cent - x[i]) ** 2).sum(1))] == inv[i])
        total += 1
    return hits / total


# ----------------------------------------------------------------------------------------------- common


def test_hex_ids_distinct_and_deterministic() -> None:
    a = hex_ids(np.random.default_rng(1), 500, 8)
    b = hex_ids(np.random.default_rng(1), 500, 8)
    assert a == b and len(set(a)) == 500
    assert all(re.fullmatch(r"[0-9a-f]{8}", h) for h in a)
    c = hex_ids(np.random.default_rng(1), 3, 32, exclude=set(a))
    assert all(len(h) == 32 for h in c)


# ----------------------------------------------------------------------------------------------- yandex


@pytest.fixture(scope="module")
def yandex_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SynthSummary]:
    d = tmp_path_factory.mktemp("yandex")
    return d, synth_yandex(d, **YANDEX_KW)


def test_yandex_layout_and_headers(yandex_dir: tuple[Path, SynthSummary]) -> None:
    d, summary = yandex_dir
    assert {p.name for p in d.iterdir()} == {"train_meta.tsv", "test_meta.tsv", *map(str, range(10))}
    train_text = (d / "train_meta.tsv").read_text()
    test_text = (d / "test_meta.tsv").read_text()
    assert train_text.splitlines()[0] == "trackid\tartistid\tarchive_features_path"
    assert test_text.splitlines()[0] == "trackid\tarchive_features_path"
    train = pl.read_csv(d / "train_meta.tsv", separator="\t")
    test = pl.read_csv(d / "test_meta.tsv", separator="\t")
    assert train.height == YANDEX_KW["tracks"] and test.height == YANDEX_KW["test_tracks"]
    assert train.schema["trackid"] == pl.Int64 and train.schema["artistid"] == pl.Int64
    assert train["artistid"].n_unique() == YANDEX_KW["artists"] == summary.classes
    ids = np.concatenate([train["trackid"].to_numpy(), test["trackid"].to_numpy()])
    assert len(np.unique(ids)) == len(ids)
    for frame in (train, test):
        for tid, rel in zip(
            frame["trackid"].to_list(), frame["archive_features_path"].to_list(), strict=True
        ):
            assert rel == f"{tid % 10}/{tid}.npy"
            assert (d / rel).is_file()
    npy = list(d.rglob("*.npy"))
    assert len(npy) == summary.clips == ids.size
    _check_summary(summary, d)
    # skewed artist sizes, some single-track artists (skipped as queries by the metric)
    sizes = train.group_by("artistid").len()["len"].to_numpy()
    assert sizes.min() == 1 and sizes.std() / sizes.mean() > 0.4


def test_yandex_shapes_and_scales(yandex_dir: tuple[Path, SynthSummary]) -> None:
    d, _ = yandex_dir
    steps, spread = [], []
    for p in sorted(d.rglob("*.npy")):
        a = np.load(p)
        assert a.dtype == np.float32 and a.ndim == 2 and a.shape[0] == 512
        assert 61 <= a.shape[1] <= 81
        assert np.isfinite(a).all()
        steps.append(a.shape[1])
        spread.append(a.std(axis=1))
    assert len(set(steps)) > 5
    per_feature = np.mean(spread, axis=0)
    assert per_feature.max() / np.median(per_feature) > 20  # a few features much larger


def test_yandex_artists_learnable(yandex_dir: tuple[Path, SynthSummary]) -> None:
    d, _ = yandex_dir
    train = pl.read_csv(d / "train_meta.tsv", separator="\t")
    x = np.stack([np.load(d / rel).mean(axis=1) for rel in train["archive_features_path"].to_list()])
    x = (x - x.mean(0)) / x.std(0)
    acc = _loo_nearest_centroid(x, train["artistid"].to_numpy())
    assert acc > 0.5, acc  # chance is 1/15


def test_yandex_deterministic(yandex_dir: tuple[Path, SynthSummary], tmp_path: Path) -> None:
    d, _ = yandex_dir
    synth_yandex(tmp_path / "a", **YANDEX_KW)
    assert _digest(tmp_path / "a") == _digest(d)
    synth_yandex(tmp_path / "b", **{**YANDEX_KW, "seed": 4})
    assert (tmp_path / "b" / "train_meta.tsv").read_bytes() != (d / "train_meta.tsv").read_bytes()


# -------------------------------------------------------------------------------------------------- fsd


@pytest.fixture(scope="module")
def fsd_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SynthSummary]:
    d = tmp_path_factory.mktemp("fsd")
    return d, synth_fsd(d, **FSD_KW)


def _read_labels(path: Path) -> list[tuple[str, list[str]]]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["fname", "labels"]
    return [(r[0], r[1].split(",")) for r in rows[1:]]


def test_fsd_layout_and_headers(fsd_dir: tuple[Path, SynthSummary]) -> None:
    d, summary = fsd_dir
    assert {p.name for p in d.iterdir()} == {
        "train_curated.csv",
        "train_noisy.csv",
        "sample_submission.csv",
        "train_curated",
        "train_noisy",
        "test",
    }
    names = fsd_class_names(FSD_KW["classes"], FSD_KW["seed"])
    header = (d / "sample_submission.csv").read_text().splitlines()[0]
    assert header == ",".join(["fname", *names])
    assert names == sorted(names) and set(names) <= set(FSD_CLASSES)
    sub = pl.read_csv(d / "sample_submission.csv")
    assert sub.columns == ["fname", *names] and sub.height == FSD_KW["test_clips"]
    assert sorted(p.name for p in (d / "test").iterdir()) == sub["fname"].to_list()
    all_names: list[str] = list(sub["fname"])
    for split, n in (("train_curated", FSD_KW["curated"]), ("train_noisy", FSD_KW["noisy"])):
        assert (d / f"{split}.csv").read_text().splitlines()[0] == "fname,labels"
        rows = _read_labels(d / f"{split}.csv")
        assert len(rows) == n
        fnames = [f for f, _ in rows]
        assert fnames == sorted(fnames)
        assert sorted(p.name for p in (d / split).iterdir()) == fnames
        assert all(re.fullmatch(r"[0-9a-f]{8}\.wav", f) for f in fnames)
        assert all(lab and set(lab) <= set(names) and len(set(lab)) == len(lab) for _, lab in rows)
        all_names += fnames
    assert len(set(all_names)) == len(all_names) == summary.clips
    assert summary.classes == FSD_KW["classes"]
    _check_summary(summary, d)


def test_fsd_multilabel_quoting(fsd_dir: tuple[Path, SynthSummary]) -> None:
    d, _ = fsd_dir
    multi = 0
    for split in ("train_curated", "train_noisy"):
        text = (d / f"{split}.csv").read_text()
        parsed = _read_labels(d / f"{split}.csv")
        for line, (fname, labels) in zip(text.splitlines()[1:], parsed, strict=True):
            if len(labels) > 1:
                multi += 1
                assert line == f'{fname},"{",".join(labels)}"'
            else:
                assert line == f"{fname},{labels[0]}"
        frame = pl.read_csv(io.StringIO(text))
        assert [s.split(",") for s in frame["labels"].to_list()] == [lab for _, lab in parsed]
    assert multi > 0
    # the form quoted in the docs parses back the same way
    row = next(csv.reader(io.StringIO('00116cd2.wav,"Marimba_and_xylophone,Glockenspiel"\n')))
    assert row == ["00116cd2.wav", "Marimba_and_xylophone,Glockenspiel"]


def test_fsd_wav_format(fsd_dir: tuple[Path, SynthSummary]) -> None:
    d, _ = fsd_dir
    durations = []
    for p in sorted(d.rglob("*.wav")):
        info = sf.info(str(p))
        assert (info.samplerate, info.channels, info.subtype, info.format) == (44100, 1, "PCM_16", "WAV")
        durations.append(info.frames / info.samplerate)
    assert 0.3 - 1e-3 <= min(durations) and max(durations) <= FSD_KW["max_seconds"] + 1e-3
    x, sr = sf.read(str(p), dtype="int16")
    assert x.ndim == 1 and np.abs(x).max() > 1000


def test_fsd_class_names() -> None:
    assert len(FSD_CLASSES) == len(set(FSD_CLASSES)) == 80
    assert fsd_class_names(80) == sorted(FSD_CLASSES)
    for name in (
        "Bark",
        "Accelerating_and_revving_and_vroom",
        "Zipper_(clothing)",
        "Marimba_and_xylophone",
        "Glockenspiel",
    ):
        assert name in FSD_CLASSES
    many = fsd_class_names(150)
    assert len(set(many)) == 150 and set(FSD_CLASSES) <= set(many)
    assert all(re.fullmatch(r"[A-Za-z0-9_()\-]+", n) for n in many)
    bands = fsd_class_bands(80)
    assert bands.shape == (80, 2) and (bands[:, 0] < bands[:, 1]).all()
    order = np.sort(bands, axis=0)
    assert (order[1:, 0] >= order[:-1, 1]).all()  # disjoint bands


def test_fsd_bands_identify_main_label(fsd_dir: tuple[Path, SynthSummary]) -> None:
    d, _ = fsd_dir
    names = fsd_class_names(FSD_KW["classes"], FSD_KW["seed"])
    bands = fsd_class_bands(FSD_KW["classes"], 44100, FSD_KW["seed"])
    hits = 0
    rows = _read_labels(d / "train_curated.csv")
    for fname, labels in rows:
        x, sr = sf.read(str(d / "train_curated" / fname))
        power = np.abs(np.fft.rfft(x)) ** 2
        freqs = np.fft.rfftfreq(len(x), 1 / sr)
        score = []
        for lo, hi in bands:
            sel = (freqs >= lo) & (freqs < hi)
            score.append(np.log(power[sel].mean() + 1e-20) if sel.any() else -np.inf)
        hits += names[int(np.argmax(score))] == labels[0]
    assert hits / len(rows) > 0.6  # chance is 1/12


def test_fsd_deterministic(fsd_dir: tuple[Path, SynthSummary], tmp_path: Path) -> None:
    d, _ = fsd_dir
    synth_fsd(tmp_path / "a", **FSD_KW)
    assert _digest(tmp_path / "a") == _digest(d)


# --------------------------------------------------------------------------------------------- speakers


@pytest.fixture(scope="module")
def speaker_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SynthSummary]:
    d = tmp_path_factory.mktemp("speakers")
    return d, synth_speakers(d, **SPEAKER_KW)


def test_speakers_layout(speaker_dir: tuple[Path, SynthSummary]) -> None:
    d, summary = speaker_dir
    assert sorted(p.name for p in d.iterdir()) == ["Dataset", "_planted"]  # the truth lies beside the format
    root = d / "Dataset"
    mapping = json.loads((root / "mapping.json").read_text())
    meta = json.loads((root / "metadata.json").read_text())
    test = json.loads((root / "testdata.json").read_text())
    labels = json.loads((root / "test_labels.json").read_text())
    assert set(mapping) == {"speaker2id", "id2speaker"}
    s2i, i2s = mapping["speaker2id"], mapping["id2speaker"]
    assert len(s2i) == SPEAKER_KW["speakers"] == summary.classes
    assert all(re.fullmatch(r"id\d{5}", s) for s in s2i)
    assert sorted(s2i.values()) == list(range(len(s2i)))
    assert i2s == {str(i): s for s, i in s2i.items()}
    assert set(meta) == {"n_mels", "speakers"} and meta["n_mels"] == 40
    assert set(meta["speakers"]) == set(s2i)
    assert set(test) == {"n_mels", "utterances"} and test["n_mels"] == 40
    assert len(test["utterances"]) == SPEAKER_KW["test_utterances"]
    entries = [u for us in meta["speakers"].values() for u in us] + test["utterances"]
    assert all(set(u) == {"feature_path", "mel_len"} for u in entries)
    assert all(len(us) == SPEAKER_KW["utterances_per_speaker"] for us in meta["speakers"].values())
    paths = [u["feature_path"] for u in entries]
    assert all(re.fullmatch(r"uttr-[0-9a-f]{32}\.pt", p) for p in paths)
    assert len(set(paths)) == len(paths) == summary.clips
    assert set(labels) == {u["feature_path"] for u in test["utterances"]} and set(labels.values()) <= set(s2i)
    assert {p.name for p in root.iterdir()} == {
        "mapping.json",
        "metadata.json",
        "testdata.json",
        "test_labels.json",
        *paths,
    }
    _check_summary(summary, d)


def test_speakers_tensors(speaker_dir: tuple[Path, SynthSummary]) -> None:
    d, _ = speaker_dir
    root = d / "Dataset"
    meta = json.loads((root / "metadata.json").read_text())
    test = json.loads((root / "testdata.json").read_text())
    lens = []
    for u in [u for us in meta["speakers"].values() for u in us] + test["utterances"]:
        t = torch.load(root / u["feature_path"])
        assert isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.dim() == 2
        assert tuple(t.shape) == (u["mel_len"], 40)
        assert t.untyped_storage().nbytes() == t.numel() * 4  # no hidden padding saved
        assert torch.isfinite(t).all()
        lens.append(u["mel_len"])
    assert 150 <= min(lens) and max(lens) <= 900 and len(set(lens)) > 10


def _speaker_utterances(d: Path) -> tuple[list[tuple[np.ndarray, int]], list[tuple[np.ndarray, int]]]:
    """(frames, speaker code) of the labelled and of the test utterances."""
    root = d / "Dataset"
    s2i = json.loads((root / "mapping.json").read_text())["speaker2id"]
    meta = json.loads((root / "metadata.json").read_text())
    test = json.loads((root / "testdata.json").read_text())
    labels = json.loads((root / "test_labels.json").read_text())

    def load(path: str) -> np.ndarray:
        return torch.load(root / path).numpy().astype(np.float64)

    train = [(load(u["feature_path"]), s2i[s]) for s in s2i for u in meta["speakers"][s]]
    held = [(load(u["feature_path"]), s2i[labels[u["feature_path"]]]) for u in test["utterances"]]
    return train, held


def _nearest_centroid_accuracy(train, held, feature) -> float:
    """Accuracy on ``held`` of the nearest class centroid of ``feature(frames)`` over ``train``."""
    classes = sorted({c for _, c in train})
    f_train = np.stack([feature(x) for x, _ in train])
    y_train = np.array([c for _, c in train])
    cent = np.stack([f_train[y_train == c].mean(0) for c in classes])
    hits = [classes[int(np.argmin(((cent - feature(x)) ** 2).sum(1)))] == c for x, c in held]
    return float(np.mean(hits))


def _band_covariance(x: np.ndarray) -> np.ndarray:
    return np.cov(x.T)[np.triu_indices(x.shape[1])]


def test_speakers_learnable(speaker_dir: tuple[Path, SynthSummary]) -> None:
    train, held = _speaker_utterances(speaker_dir[0])
    # the mean spectrum still identifies speakers, through the channel and the voice of the day: 0.44 at this
    # seed, chance 1/8 (frame dynamics carry the rest: test_speakers_identity_lives_in_frame_dynamics)
    assert _nearest_centroid_accuracy(train, held, lambda x: x.mean(0)) > 0.3


def test_speakers_channel_moves_each_utterance_mean(speaker_dir: tuple[Path, SynthSummary]) -> None:
    # the recording channel shifts an utterance's average spectrum away from its speaker's: the spread of
    # one speaker's utterance means is far above what frame noise alone leaves in a mean of >= 150 frames
    train, _ = _speaker_utterances(speaker_dir[0])
    spread = []
    for c in {c for _, c in train}:
        means = np.stack([x.mean(0) for x, k in train if k == c])
        spread.append(np.sqrt(((means - means.mean(0)) ** 2).mean()))
    assert np.mean(spread) > 0.3  # frame noise 0.8 over >= 150 frames: about 0.07


def _lagged_covariance(x: np.ndarray, lag: int = 4) -> np.ndarray:
    xc = x - x.mean(0)
    a = xc[lag:].T @ xc[:-lag] / len(x)
    return ((a + a.T) / 2)[np.triu_indices(x.shape[1])]


def test_speakers_identity_lives_in_frame_dynamics(tmp_path: Path) -> None:
    # each speaker's band patterns are a rotation of shared ones, so the zero-lag band covariance (and each
    # band's variance) barely tells speakers apart; the time scale of each pattern does: a centroid of the
    # frames' lag-4 covariance beats centroids of the mean, the std and the zero-lag covariance
    synth_speakers(tmp_path, speakers=8, utterances_per_speaker=10, test_utterances=40, seed=7)
    train, held = _speaker_utterances(tmp_path)
    by = {name: _nearest_centroid_accuracy(train, held, f) for name, f in (
        ("mean", lambda x: x.mean(0)), ("std", lambda x: x.std(0)), ("cov", _band_covariance),
        ("lag", _lagged_covariance))}
    # 0.875 against 0.4, 0.25 and 0.5 at this seed; chance 1/8
    assert by["lag"] > 0.7 and by["lag"] >= max(by["mean"], by["std"], by["cov"]) + 0.25, by


def test_speakers_planted_truth_is_what_was_written(speaker_dir: tuple[Path, SynthSummary]) -> None:
    # each utterance's time mean is its speaker's planted mean + its planted offset + the energy mean, up to
    # the frame noise and the session source left in a mean of >= 150 frames
    from featurestore.synth import speakers as synth

    d, summary = speaker_dir
    p = np.load(d / synth.PLANTED)
    n = summary.clips
    assert p["utterances"].shape == (n,) and p["offset"].shape == (n, 40) and p["source"].shape == (n, 40)
    assert p["speaker_mean"].shape == (SPEAKER_KW["speakers"], 40) and p["patterns"].shape[:2] == (8, 3)
    row = {str(u): i for i, u in enumerate(p["utterances"])}
    train, held = _speaker_utterances(d)
    meta = json.loads((d / "Dataset" / "metadata.json").read_text())
    test = json.loads((d / "Dataset" / "testdata.json").read_text())
    paths = [u["feature_path"] for us in meta["speakers"].values() for u in us] + \
        [u["feature_path"] for u in test["utterances"]]
    for (x, c), path in zip(train + held, paths, strict=True):
        i = row[path]
        assert p["speaker"][i] == c
        planted_mean = p["speaker_mean"][c] + p["offset"][i] + synth.ENERGY_MEAN
        assert np.sqrt(((x.mean(0) - planted_mean) ** 2).mean()) < 0.3


def test_speakers_dynamics_do_not_survive_a_time_average() -> None:
    # one speaker, many utterances: frames' covariance varies with the planted patterns while the
    # speaker's dynamics add nothing to the utterance mean (centred trajectories)
    from featurestore.synth import speakers as synth

    z = synth._trajectories(np.random.default_rng(0), np.array([[0.55, 0.95]]), np.array([300]))
    assert z.shape == (1, synth.MAX_MEL_LEN, 2)
    assert np.allclose(z[0, :300].mean(0), 0.0, atol=1e-5)
    assert 0.5 < z[0, :300].std(0).min()
    lag1 = [np.corrcoef(z[0, :299, k], z[0, 1:300, k])[0, 1] for k in range(2)]
    assert lag1[1] > lag1[0] + 0.2  # the smoother trajectory is the more correlated frame to frame


def test_speakers_deterministic(speaker_dir: tuple[Path, SynthSummary], tmp_path: Path) -> None:
    d, _ = speaker_dir
    synth_speakers(tmp_path / "a", **SPEAKER_KW)
    assert _digest(tmp_path / "a") == _digest(d)
    synth_speakers(tmp_path / "b", **{**SPEAKER_KW, "seed": 8})
    assert _digest(tmp_path / "b") != _digest(d)
