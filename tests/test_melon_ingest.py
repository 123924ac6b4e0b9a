"""``fstore ingest melon`` and ``fstore split melon``: round trip, bad input as one line, repeats, the
JSON-array block reader, split determinism."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import msgspec
import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from featurestore.cli import main
from featurestore.ingest.json_array import iter_items
from featurestore.ingest.melon import ingest_melon
from featurestore.ingest.melon_split import split_melon
from featurestore.schemas import melon as S
from featurestore.store import InputError, Store, StoreError
from featurestore.synth.melon import synth_melon


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("melon_raw")
    synth_melon(out, playlists=300, songs=1500, seed=4, progress=False)
    return out


@pytest.fixture(scope="module")
def store(raw: Path, tmp_path_factory) -> Store:
    path = tmp_path_factory.mktemp("melon_store") / "s"
    ingest_melon(raw, path, progress=False, block_bytes=4096)  # many blocks: the block joins are exercised
    return Store(path)


def load(path: Path) -> list:
    return json.loads(path.read_text(encoding="utf-8"))


def decoded(store: Store, table: str, col: str, values: list[str]) -> list[list[str]]:
    r = store.ragged(table)
    flat = r.read(col)
    return [[values[c] for c in flat[r.offsets[i]:r.offsets[i + 1]]] for i in range(r.rows)]


def test_round_trip(raw: Path, store: Store) -> None:
    assert store.validate() == []
    song_ids = store.ids(S.SONG_IDS)
    tags = store.dictionary(S.DICT_TAG).values
    for split in S.SPLITS:
        playlists = load(raw / f"{split}.json")
        got_songs = decoded(store, S.songs_table(split), "song", song_ids)
        got_tags = decoded(store, S.tags_table(split), "tag", tags)
        meta = store.parquet(S.playlists_table(split)).to_pylist()
        for p, s, t, m in zip(playlists, got_songs, got_tags, meta, strict=True):
            assert s == [str(x) for x in dict.fromkeys(p["songs"])]
            assert t == p["tags"]
            assert (m["id"], m["title"], m["like_cnt"], m["updt_date"]) == (
                p["id"], p["plylst_title"], p["like_cnt"], p["updt_date"])
            assert m["repeats"] == len(p["songs"]) - len(set(p["songs"]))
        if split != "train":
            answers = load(raw / S.ANSWERS_DIR / f"{split}.json")
            assert [a["id"] for a in answers] == [m["id"] for m in meta]
            a_songs = decoded(store, S.answer_songs_table(split), "song", song_ids)
            a_tags = decoded(store, S.answer_tags_table(split), "tag", tags)
            assert a_songs == [[str(x) for x in a["songs"]] for a in answers]
            assert a_tags == [a["tags"] for a in answers]


def test_song_side(raw: Path, store: Store) -> None:
    songs = load(raw / S.SONG_META)
    assert store.ids(S.SONG_IDS) == [str(s["id"]) for s in songs]
    info = store.columns(S.SONG_INFO)
    albums = store.dictionary(S.DICT_ALBUM).values
    assert info["date_missing"].dtype == bool and info["issue_year"].dtype == np.int16
    for i, s in enumerate(songs):
        d = s["issue_date"]
        missing = d == "00000000"
        assert bool(info["date_missing"][i]) == missing
        assert info["issue_year"][i] == (0 if missing else int(d[:4]))
        assert info["issue_month"][i] == (0 if missing else int(d[4:6]))
        assert (albums[info["album"][i]] if info["album"][i] >= 0 else None) == (
            None if s["album_id"] is None else str(s["album_id"]))
    artists = decoded(store, S.SONG_ARTISTS, "artist", store.dictionary(S.DICT_ARTIST).values)
    assert artists == [[str(a) for a in s["artist_id_basket"]] for s in songs]
    genres = decoded(store, S.SONG_DETAIL_GENRES, "detail_genre", store.dictionary(S.DICT_DETAIL_GENRE).values)
    assert genres == [s["song_gn_dtl_gnr_basket"] for s in songs]
    popularity = np.zeros(len(songs), dtype=np.int64)
    for p in load(raw / "train.json"):
        popularity[list(set(p["songs"]))] += 1
    assert np.array_equal(info["popularity"], popularity)
    assert {"sha256", "path"} <= set(store.manifest["sources"][0])


def test_repeats_counted(raw: Path, tmp_path: Path) -> None:
    copy = tmp_path / "raw"
    shutil.copytree(raw, copy)
    train = load(copy / "train.json")
    train[0]["songs"] = train[0]["songs"][:3] * 3  # 6 repeats
    train[1]["tags"] = [train[1]["tags"][0]] * 3  # 2 repeated tags
    (copy / "train.json").write_text(json.dumps(train, ensure_ascii=False), encoding="utf-8")
    r = CliRunner().invoke(main, ["ingest", "melon", str(copy), str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    before = sum(len(p["songs"]) - len(set(p["songs"])) for p in load(raw / "train.json"))
    assert f"train: {before + 6} repeated songs dropped" in r.output and ", 2 repeated tags dropped" in r.output
    assert Store(tmp_path / "s").parquet("train_playlists").column("repeats")[0].as_py() == 6
    assert Store(tmp_path / "s").ragged("train_songs").lengths()[0] == 3
    assert Store(tmp_path / "s").ragged("train_tags").lengths()[1] == 1


def _broken(raw: Path, tmp_path: Path, name: str, edit) -> Path:
    copy = tmp_path / "raw"
    shutil.copytree(raw, copy, ignore=shutil.ignore_patterns("_planted"))
    path = copy / name
    if edit is None:
        path.unlink()
    else:
        path.write_bytes(edit(path.read_bytes()))
    return copy


def _json_edit(fn):
    def edit(data: bytes) -> bytes:
        items = json.loads(data)
        fn(items)
        return json.dumps(items, ensure_ascii=False).encode()
    return edit


def _set(i, key, value):
    return _json_edit(lambda items: items[i].__setitem__(key, value))


BAD = {
    "truncated": ("train.json", lambda d: d[: len(d) // 2], r"train.json: truncated: no closing ']' at byte \d+"),
    "garbage": ("song_meta.json", lambda d: d.replace(b'"id":5}', b'"id":5 x}', 1), r"song_meta.json: invalid JSON at byte \d+"),
    "not_array": ("val.json", lambda d: b'{"a": 1}', r"val.json: not a JSON array"),
    "dup_within": ("train.json", _json_edit(lambda it: it[3].__setitem__("id", it[1]["id"])),
                   r"train.json: item 3, field id: playlist id \d+ seen twice \(first in train.json item 1\)"),
    "dup_across": ("test.json", None, r"test.json: item 0, field id: playlist id \d+ seen twice \(first in train.json item 2\)"),
    "unknown_song": ("val.json", _set(2, "songs", [0, 99999999]),
                     r"val.json: item 2, field songs\[1\]: song id 99999999 not in song_meta.json"),
    "wrong_type": ("train.json", _set(4, "like_cnt", "7"), r"train.json: item 4, field like_cnt: Expected `int`, got `str`"),
    "wrong_song_type": ("train.json", _set(1, "songs", [1, "2"]), r"train.json: item 1, field songs\[1\]: Expected `int`"),
    "missing_field": ("song_meta.json", _json_edit(lambda it: it[7].pop("issue_date")),
                      r"song_meta.json: item 7: Object missing required field `issue_date`"),
    "dup_song": ("song_meta.json", _set(9, "id", 3), r"song_meta.json: item 9, field id: song id 3 seen twice"),
    "missing_meta": ("song_meta.json", "delete", r"song_meta.json: file missing"),
    "missing_train": ("train.json", "delete", r"train.json: file missing"),
    "orphan_answer": ("answers/val.json", _set(0, "id", 10**9), r"answers/val.json: item 0, field id: playlist 1000000000 is not a question"),
    "genres": ("genre_gn_all.json", lambda d: b"[1]", r"genre_gn_all.json: .*expected an object"),
    "unanswered": ("answers/val.json", _json_edit(lambda it: it.pop(1)),
                   r"answers/val.json: no answer for playlist \d+ \(val.json item 1; 1 questions unanswered\)"),
    "answers_alone": ("val.json", "delete", r"val.json: file missing \(but .*answers/val.json exists\)"),
    "huge_like_cnt": ("train.json", _set(5, "like_cnt", 2**40), r"train.json: item 5, field like_cnt: 1099511627776 "
                      r"out of range"),
    "huge_song_id": ("test.json", _set(0, "songs", [2**70]), r"test.json: item 0, field songs: .*out of range"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_one_line(raw: Path, tmp_path: Path, case: str) -> None:
    name, edit, pattern = BAD[case]
    if case == "dup_across":
        train_id = load(raw / "train.json")[2]["id"]
        edit = _set(0, "id", train_id)
    copy = _broken(raw, tmp_path, name, None if edit == "delete" else edit)
    r = CliRunner().invoke(main, ["ingest", "melon", str(copy), str(tmp_path / "s")])
    assert r.exit_code != 0
    assert "Traceback" not in r.output and isinstance(r.exception, SystemExit)
    lines = [x for x in r.output.splitlines() if x.startswith("Error:")]  # (progress bars share stderr)
    assert len(lines) == 1, r.output
    assert re.search(pattern, lines[0]), lines[0]
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())  # nothing committed


# --- the JSON-array block reader --------------------------------------------------------------------

TEXT = st.text(alphabet=st.sampled_from(list('ab{}[]",:\\ 한글\n\t€😀')) | st.characters(exclude_categories=("Cs",)), max_size=12)
VALUE = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | TEXT,
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3), max_leaves=8)


@given(items=st.lists(st.dictionaries(TEXT, VALUE, max_size=4), max_size=12),
       block=st.integers(1, 64), indent=st.sampled_from([None, 0, 2]), ascii_=st.booleans())
def test_block_reader_property(tmp_path_factory, items: list, block: int, indent, ascii_: bool) -> None:
    path = tmp_path_factory.mktemp("ja") / "a.json"
    path.write_text(json.dumps(items, indent=indent, ensure_ascii=ascii_), encoding="utf-8")
    got, firsts = [], []
    for first, part in iter_items(path, dict, block_bytes=block):
        firsts.append(first)
        got += part
    assert got == items
    assert firsts == sorted(firsts)


def test_block_reader_errors(tmp_path: Path) -> None:
    p = tmp_path / "a.json"
    for text, message in [('[{"a": 1}, {"a": 2}', "truncated"), ('[{"a": 1} {"a": 2}]', "expected ','"),
                          ("", "empty file"), ('[{"a": 1}, 5]', "not an object"),
                          ('[{"a": 1}, 5, {"a": 2}]', "item 1: Expected `object`")]:
        p.write_text(text)
        with pytest.raises(InputError, match=message):
            for _ in iter_items(p, dict, block_bytes=4):
                pass
    p.write_text("  [ ]  \n")
    assert list(iter_items(p, dict)) == []


BOM = "\ufeff".encode()


@pytest.mark.parametrize("block", [1, 2, 3, 4, 64])
def test_block_reader_bom(tmp_path: Path, block: int) -> None:
    """A UTF-8 byte-order mark before the array is skipped (blocks shorter than the mark too); error
    offsets stay offsets in the file."""
    p = tmp_path / "a.json"
    p.write_bytes(BOM + b'\r\n[{"a": 1}, {"a": "\xc3\xa9"}]\r\n')
    assert [x for _, part in iter_items(p, dict, block_bytes=block) for x in part] == [{"a": 1}, {"a": "é"}]
    p.write_bytes(BOM + b'  {"a": 1}')
    with pytest.raises(InputError, match=r"a.json: not a JSON array \(byte 5: expected '\['\)"):
        list(iter_items(p, dict, block_bytes=block))
    p.write_bytes(BOM + b'[{"a": 1} {"a": 2}]')
    with pytest.raises(InputError, match=r"a.json: invalid JSON at byte 13\b"):
        list(iter_items(p, dict, block_bytes=block))


@pytest.mark.parametrize("content", [b"", b" \n\t\r\n", BOM, BOM + b"\r\n  "])
@pytest.mark.parametrize("block", [1, 4, 64])
def test_block_reader_empty_file(tmp_path: Path, content: bytes, block: int) -> None:
    p = tmp_path / "a.json"
    p.write_bytes(content)
    with pytest.raises(InputError, match=r"a.json: empty file") as e:
        list(iter_items(p, dict, block_bytes=block))
    assert "\n" not in str(e.value)


def _with_bom(raw: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "raw"
    shutil.copytree(raw, copy, ignore=shutil.ignore_patterns("_planted"))
    for p in sorted(copy.rglob("*.json")):
        p.write_bytes(BOM + p.read_bytes())
    return copy


def test_release_with_bom_ingests_the_same(raw: Path, store: Store, tmp_path: Path) -> None:
    """Every JSON file (playlists, song_meta, genre_gn_all, answers) saved with a byte-order mark."""
    copy = _with_bom(raw, tmp_path)
    r = CliRunner().invoke(main, ["ingest", "melon", str(copy), str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    got = Store(tmp_path / "s")
    assert got.validate() == [] and got.tables == store.tables
    assert got.ids(S.SONG_IDS) == store.ids(S.SONG_IDS)
    for split in S.SPLITS:
        assert got.parquet(S.playlists_table(split)).equals(store.parquet(S.playlists_table(split)))


@pytest.mark.parametrize("name", ["train.json", "song_meta.json", S.GENRES])
@pytest.mark.parametrize("content", [b"", BOM, b"\n  \n"])
def test_empty_json_file_one_line(raw: Path, tmp_path: Path, name: str, content: bytes) -> None:
    copy = _broken(raw, tmp_path, name, lambda d: content)
    r = CliRunner().invoke(main, ["ingest", "melon", str(copy), str(tmp_path / "s")])
    assert r.exit_code == 1 and "Traceback" not in r.output and isinstance(r.exception, SystemExit)
    lines = [x for x in r.output.splitlines() if x.startswith("Error:")]
    assert len(lines) == 1 and f"{copy / name}: empty file" in lines[0], r.output


# --- split ------------------------------------------------------------------------------------------

def test_split(raw: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    split_melon(raw, a, fraction=0.2, seed=1)
    split_melon(raw, b, fraction=0.2, seed=1)
    for name in ["train.json", "val.json", "answers/val.json"]:
        assert (a / name).read_bytes() == (b / name).read_bytes()
    split_melon(raw, b, fraction=0.2, seed=2, overwrite=True)
    assert (a / "val.json").read_bytes() != (b / "val.json").read_bytes()
    original = {p["id"]: p for p in load(raw / "train.json")}
    train, questions, answers = load(a / "train.json"), load(a / "val.json"), load(a / "answers/val.json")
    assert len(questions) == round(0.2 * len(original))
    assert sorted([p["id"] for p in train] + [q["id"] for q in questions]) == sorted(original)
    assert all(p == original[p["id"]] for p in train)
    for q, ans in zip(questions, answers, strict=True):
        o = {k: list(dict.fromkeys(v)) if k in ("songs", "tags") else v for k, v in original[q["id"]].items()}
        assert q["id"] == ans["id"] and ans["plylst_title"] == o["plylst_title"]
        for key, cap in (("songs", S.N_SONGS), ("tags", S.N_TAGS)):
            kept = q[key] + [x for x in ans[key] if x not in q[key]]
            assert set(kept) <= set(o[key])
            assert [x for x in o[key] if x in set(q[key])] == q[key]  # original order
            if len(o[key]) - len(q[key]) <= cap:
                assert sorted(kept) == sorted(o[key])
        assert ans["songs"] and ans["tags"]
    r = CliRunner().invoke(main, ["ingest", "melon", str(a), str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    s = Store(tmp_path / "s")
    assert s.ragged("val_answer_songs").rows == len(questions) and "test_songs" not in s.tables


def test_split_cli(raw: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["split", "melon", str(raw), str(tmp_path / "o"), "--fraction", "0.1", "--seed", "3"])
    assert r.exit_code == 0, r.output
    assert "questions (answers/val.json)" in r.output
    r = CliRunner().invoke(main, ["split", "melon", str(tmp_path / "nothing"), str(tmp_path / "o2")])
    assert r.exit_code != 0 and "song_meta.json: file missing" in r.output


def test_validate_new_kinds(raw: Path, tmp_path: Path) -> None:
    ingest_melon(raw, tmp_path / "s", progress=False)
    s = Store(tmp_path / "s")
    rel = s.tables["val_playlists"]["path"]
    table = pq.read_table(s.data_dir / rel)
    (s.data_dir / rel).unlink()  # replace (not write through a hard link)
    pq.write_table(table.slice(0, 3), s.data_dir / rel)
    problems = Store(tmp_path / "s").validate(checksums=False)
    assert any(p.startswith("val_playlists/id: 3 rows, manifest says") for p in problems), problems
    assert Store(tmp_path / "s").validate()  # and the checksum catches it too


def test_wrong_kind_is_one_line(store: Store) -> None:
    with pytest.raises(StoreError, match="no parquet table 'song_info'"):
        store.parquet(S.SONG_INFO)
    with pytest.raises(StoreError, match="no columns table 'train_playlists'"):
        store.columns("train_playlists")


def test_s3_store_reads_new_kinds(raw: Path, tmp_path: Path) -> None:
    from bench.remote import moto_s3

    with moto_s3("melon"):
        ingest_melon(raw, "s3://melon/store", progress=False)
        remote = Store("s3://melon/store", cache_dir=tmp_path / "cache")
        local = ingest_melon(raw, tmp_path / "local", progress=False) and Store(tmp_path / "local")
        assert remote.validate() == []
        assert remote.parquet("val_playlists").equals(local.parquet("val_playlists"))
        for c, v in local.columns(S.SONG_INFO).items():
            assert np.array_equal(remote.columns(S.SONG_INFO)[c], v)


def test_msgspec_structs_match_fields() -> None:
    assert [f for f in S.Playlist.__struct_fields__] == ["tags", "id", "plylst_title", "songs", "like_cnt", "updt_date"]
    assert set(S.Song.__struct_fields__) == set(S.SONG_FIELDS)
    assert set(S.Playlist.__struct_fields__) == set(S.PLAYLIST_FIELDS)
    assert msgspec.json.decode(b'{"tags":[],"id":1,"plylst_title":"","songs":[],"like_cnt":0,'
                               b'"updt_date":"2020-01-01 00:00:00.000"}', type=S.Playlist).id == 1
