"""``fstore synth melon``: exact raw schema and quirks, questions/answers, planted signal, oracle."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from featurestore.cli import main
from featurestore.schemas import melon as S
from featurestore.synth.melon import PLANTED, oracle_results, synth_melon
from models.metrics import melon_score

PLAYLIST_KEYS = ["tags", "id", "plylst_title", "songs", "like_cnt", "updt_date"]
SONG_KEYS = ["song_gn_dtl_gnr_basket", "issue_date", "album_name", "album_id", "artist_id_basket", "song_name",
             "song_gn_gnr_basket", "artist_name_basket", "id"]
HANGUL = re.compile(r"[\uac00-\ud7a3]")


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("melon_raw")
    synth_melon(out, playlists=400, songs=3000, seed=3, progress=False)
    return out


def load(raw: Path, name: str) -> list:
    return json.loads((raw / name).read_text(encoding="utf-8"))


def test_files_and_exact_fields(raw: Path) -> None:
    for name in ["train.json", "val.json", "test.json", "answers/val.json", "answers/test.json"]:
        for p in load(raw, name):
            assert list(p) == PLAYLIST_KEYS, name
            assert isinstance(p["id"], int) and isinstance(p["like_cnt"], int) and p["like_cnt"] >= 0
            assert all(isinstance(s, int) for s in p["songs"]) and all(isinstance(t, str) for t in p["tags"])
            assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.000", p["updt_date"]), p["updt_date"]
            assert len(set(p["tags"])) == len(p["tags"])
    songs = load(raw, S.SONG_META)
    assert [s["id"] for s in songs] == list(range(3000))
    for s in songs:
        assert list(s) == SONG_KEYS
        assert re.fullmatch(r"\d{8}", s["issue_date"])
        assert len(s["artist_id_basket"]) == len(s["artist_name_basket"])
    genres = load(raw, S.GENRES)
    assert all(re.fullmatch(r"GN\d{4}", g) for g in genres) and "GN0101" in genres
    assert {g for s in songs for g in s["song_gn_gnr_basket"] + s["song_gn_dtl_gnr_basket"]} <= set(genres)


def test_quirks_present(raw: Path) -> None:
    songs = load(raw, S.SONG_META)
    dates = [s["issue_date"] for s in songs]
    assert "00000000" in dates
    assert any(d[4:6] == "00" and d != "00000000" for d in dates)
    assert any(d[6:] == "00" and d[4:6] != "00" for d in dates)
    assert any(not s["song_gn_gnr_basket"] for s in songs)
    assert any(not s["artist_id_basket"] for s in songs)
    text = (raw / "train.json").read_bytes()
    assert b"\\u" not in text  # UTF-8, not ASCII escapes
    train = load(raw, "train.json")
    assert sum(bool(HANGUL.search(p["plylst_title"])) for p in train) > len(train) // 2
    assert all(HANGUL.search(t) or t.isascii() for p in train for t in p["tags"])
    assert any(len(p["songs"]) != len(set(p["songs"])) for p in train)  # planted repeats for the ingest


def test_splits_questions_and_answers(raw: Path) -> None:
    train, song_count = load(raw, "train.json"), 3000
    ids = [p["id"] for p in train]
    for split in ("val", "test"):
        questions, answers = load(raw, f"{split}.json"), load(raw, f"answers/{split}.json")
        assert [q["id"] for q in questions] == [a["id"] for a in answers]
        ids += [q["id"] for q in questions]
        kinds = set()
        for q, a in zip(questions, answers, strict=True):
            assert 1 <= len(a["songs"]) <= S.N_SONGS and 1 <= len(a["tags"]) <= S.N_TAGS
            assert not set(q["songs"]) & set(a["songs"]) and not set(q["tags"]) & set(a["tags"])
            assert all(0 <= s < song_count for s in q["songs"] + a["songs"])
            kinds.add((bool(q["songs"]), bool(q["tags"]), bool(q["plylst_title"])))
        assert (True, False, False) in kinds  # songs only
        assert (False, True, True) in kinds  # tags only (title kept)
        assert (False, False, True) in kinds  # title only
        assert any(s and t for s, t, _ in kinds)  # songs and tags
    assert len(ids) == len(set(ids)) == 400
    n_train = len(train)
    assert 0.7 * 400 < n_train < 0.9 * 400


def test_deterministic(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        synth_melon(out, playlists=60, songs=300, seed=11, progress=False)
    files = sorted(p.relative_to(a) for p in a.rglob("*.json"))
    assert files and all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    synth_melon(b, playlists=60, songs=300, seed=12, progress=False, overwrite=True)
    assert (a / "train.json").read_bytes() != (b / "train.json").read_bytes()


def test_oracle_is_valid_and_beats_popularity(raw: Path) -> None:
    assert (raw / PLANTED).is_file()
    questions = {q["id"]: q for q in load(raw, "val.json")}
    recs = oracle_results(raw, "val")
    assert [r["id"] for r in recs] == list(questions)
    for r in recs:
        q = questions[r["id"]]
        assert len(set(r["songs"])) == S.N_SONGS and len(set(r["tags"])) == S.N_TAGS
        assert not set(r["songs"]) & set(q["songs"]) and not set(r["tags"]) & set(q["tags"])
    answers = load(raw, "answers/val.json")
    train = load(raw, "train.json")
    counts: dict = {}
    tag_counts: dict = {}
    for p in train:
        for s in set(p["songs"]):
            counts[s] = counts.get(s, 0) + 1
        for t in p["tags"]:
            tag_counts[t] = tag_counts.get(t, 0) + 1
    pop = sorted(counts, key=lambda s: -counts[s])
    pop_tags = sorted(tag_counts, key=lambda t: -tag_counts[t])
    popular = [{"id": i, "songs": [s for s in pop if s not in q["songs"]][:100],
                "tags": [t for t in pop_tags if t not in q["tags"]][:10]} for i, q in questions.items()]
    oracle, base = melon_score(answers, recs)["score"], melon_score(answers, popular)["score"]
    assert oracle > base + 0.2, (oracle, base)


def test_cli_synth(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["synth", "melon", str(tmp_path / "o"), "--playlists", "40", "--songs", "300"])
    assert r.exit_code == 0, r.output
    assert "wrote" in r.output and "300 songs" in r.output
    r = CliRunner().invoke(main, ["synth", "melon", str(tmp_path / "o"), "--playlists", "40", "--songs", "300"])
    assert r.exit_code != 0 and "not empty" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["synth", "melon", str(tmp_path / "p"), "--songs", "100"])
    assert r.exit_code == 2 and "--songs" in r.output and "Traceback" not in r.output


def test_oracle_test_split(raw: Path) -> None:
    recs = oracle_results(raw, "test")
    answers = load(raw, "answers/test.json")
    assert melon_score(answers, recs)["score"] > 0.3
