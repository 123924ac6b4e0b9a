"""``fstore ingest melon``: a Melon Playlist Continuation release (or a synthetic or split one) -> store.

Layout and table names: :mod:`featurestore.schemas.melon`. Files are read as streams of whole JSON
elements (:mod:`.json_array`), so memory holds one block of decoded objects plus per-song and
per-playlist arrays (a few bytes each), never a whole file's objects. Songs get codes in song_meta.json
order; every playlist song must be in song_meta.json. Playlist ids are unique over all splits. A song
repeated within a playlist is kept once (first position) and counted (``repeats`` column, summary note).
Answers (``answers/S.json``) are matched to the questions by playlist id and stored in question order;
an answer without a question, or a question without an answer, is an error.
"""

from __future__ import annotations

import codecs
import resource
from collections.abc import Callable
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..schemas import melon as S
from ..store import Dictionary, InputError, RaggedWriter
from ..store.arrays import create
from .builder import IngestSummary, StoreBuilder, file_sources, refuse_existing
from .json_array import BLOCK_BYTES, iter_items

SONG_REF = S.SONG_INFO  # ragged song columns reference song_info's rows (one per song code)
_INFO_COLUMNS = {"album": ("int32", {"dictionary": S.DICT_ALBUM, "missing": -1}), "issue_year": ("int16", {}),
                 "issue_month": ("int8", {}), "date_missing": ("bool", {"type": "bool"}),
                 "popularity": ("int32", {"type": "count", "split": "train"})}


class MelonSummary(IngestSummary):
    """The ingest summary in playlists: per split playlists / songs / tags (and answers), songs side."""

    def lines(self) -> list[str]:
        out = [f"files          {self.files} ({self.raw_bytes / 1e6:.1f} MB raw)"]
        t = self.tables
        info = t.get(S.SONG_INFO, {})
        out.append(f"songs          {info.get('rows', 0)} ({t.get(S.SONG_ARTISTS, {}).get('events', 0)} artist links, "
                   f"{t.get(S.SONG_GENRES, {}).get('events', 0)} genre links)")
        total = 0
        for split in S.SPLITS:
            if S.songs_table(split) not in t:
                continue
            songs, tags = t[S.songs_table(split)], t[S.tags_table(split)]
            total += songs["rows"]
            line = f"{split:<14} {songs['rows']} {self.row_unit}, {songs['events']} songs, {tags['events']} tags"
            if S.answer_songs_table(split) in t:
                line += (f"; answers {t[S.answer_songs_table(split)]['events']} songs, "
                         f"{t[S.answer_tags_table(split)]['events']} tags")
            out.append(line)
        out += [f"bytes on disk  {self.bytes_on_disk / 1e6:.2f} MB",
                f"seconds        {self.seconds:.2f} ({total / max(self.seconds, 1e-9):,.0f} playlists/s)"]
        return out + [f"note           {n}" for n in self.notes]


def _parse_date(s: str) -> tuple[int, int, bool]:
    """(year, month, missing) of an issue_date ``YYYYMMDD`` (``00`` month or day allowed)."""
    if len(s) != 8 or not s.isdigit() or s == S.MISSING_ISSUE_DATE:
        return 0, 0, True
    year, month = int(s[:4]), int(s[4:6])
    if year == 0 or month > 12:
        return 0, 0, True
    return year, month, False


class _Songs:
    """song_meta.json -> song ragged tables, song ids; keeps the per-song columns for song_info."""

    def __init__(self, b: StoreBuilder, genres: dict[str, str]):
        self.b = b
        self.artist, self.album = b.dictionary(S.DICT_ARTIST), b.dictionary(S.DICT_ALBUM)
        self.genre = b.dictionary(S.DICT_GENRE, [g for g in genres if g.endswith("00")])
        self.detail = b.dictionary(S.DICT_DETAIL_GENRE, [g for g in genres if not g.endswith("00")])
        self.known_genres = len(self.genre) + len(self.detail)
        cols = {S.SONG_ARTISTS: ("artist", "int32", S.DICT_ARTIST), S.SONG_GENRES: ("genre", "int16", S.DICT_GENRE),
                S.SONG_DETAIL_GENRES: ("detail_genre", "int16", S.DICT_DETAIL_GENRE)}
        self.writers = {t: RaggedWriter(b.root, t, {c: {"dtype": d, "dictionary": dn}}) for t, (c, d, dn) in cols.items()}
        self.ids_writer = b.ids(S.SONG_IDS)
        self.ids: list[np.ndarray] = []
        self.info: dict[str, list[np.ndarray]] = {c: [] for c in _INFO_COLUMNS if c != "popularity"}
        self.bad_dates = 0

    def add(self, items: list[S.Song]) -> None:
        import polars as pl

        n = len(items)
        ids = np.fromiter((s.id for s in items), dtype=np.int64, count=n)
        artists = [[self.artist.add(str(a)) for a in s.artist_id_basket] for s in items]
        genres = [[self.genre.add(g) for g in s.song_gn_gnr_basket] for s in items]
        details = [[self.detail.add(g) for g in s.song_gn_dtl_gnr_basket] for s in items]
        for table, lists, col in ((S.SONG_ARTISTS, artists, "artist"), (S.SONG_GENRES, genres, "genre"),
                                  (S.SONG_DETAIL_GENRES, details, "detail_genre")):
            lengths = np.fromiter(map(len, lists), dtype=np.int64, count=n)
            flat = np.fromiter((x for row in lists for x in row), dtype=np.int64, count=int(lengths.sum()))
            self.writers[table].append(lengths, {col: flat})
        dates = [_parse_date(s.issue_date) for s in items]
        self.bad_dates += sum(1 for s, (_, _, m) in zip(items, dates, strict=True)
                              if m and s.issue_date != S.MISSING_ISSUE_DATE)
        self.info["album"].append(np.array([-1 if s.album_id is None else self.album.add(str(s.album_id))
                                            for s in items], dtype=np.int32))
        self.info["issue_year"].append(np.array([d[0] for d in dates], dtype=np.int16))
        self.info["issue_month"].append(np.array([d[1] for d in dates], dtype=np.int8))
        self.info["date_missing"].append(np.array([d[2] for d in dates], dtype=bool))
        self.ids.append(ids)
        self.ids_writer.append(pl.Series(ids.astype(str), dtype=pl.Utf8))

    def finish(self, path: Path) -> None:
        for t, w in self.writers.items():
            self.b.table(t, w.close())
        ids = np.concatenate(self.ids) if self.ids else np.empty(0, dtype=np.int64)
        self.order = np.argsort(ids, kind="stable")
        self.sorted_ids = ids[self.order]
        dup = np.flatnonzero(self.sorted_ids[1:] == self.sorted_ids[:-1])
        if dup.size:
            item = int(max(self.order[dup[0]], self.order[dup[0] + 1]))
            raise InputError(path, f"item {item}, field id: song id {self.sorted_ids[dup[0]]} seen twice")
        self.n = ids.size

    def codes(self, raw: np.ndarray) -> np.ndarray:
        """Song codes of raw ids; -1 for ids not in song_meta.json."""
        pos = np.minimum(np.searchsorted(self.sorted_ids, raw), max(self.n - 1, 0))
        found = (self.sorted_ids[pos] == raw) if self.n else np.zeros(raw.size, dtype=bool)
        return np.where(found, self.order[pos], -1)

    def write_info(self, popularity: np.ndarray) -> dict:
        g = self.b.root.require_group(S.SONG_INFO)
        cols = {c: np.concatenate(v) if v else np.empty(0) for c, v in self.info.items()}
        cols["popularity"] = popularity.astype(np.int32)
        meta_cols = {}
        for c, (dtype, extra) in _INFO_COLUMNS.items():
            values = cols[c].astype(np.uint8 if dtype == "bool" else dtype)
            arr = create(g, c, values.dtype, values.shape, (max(1, min(values.size, 1 << 20)),), bits=dtype == "bool")
            arr[:] = values
            meta_cols[c] = {"dtype": dtype, **extra}
        meta = {"kind": "columns", "rows": self.n, "columns": meta_cols}
        g.attrs.update(meta)
        return meta


class _Playlists:
    """One split's playlists -> S_songs, S_tags, S_playlists (and answers when given)."""

    def __init__(self, b: StoreBuilder, songs: _Songs, tags: Dictionary, split: str, seen: dict):
        self.b, self.songs, self.tags, self.split, self.seen = b, songs, tags, split, seen
        self.song_w = RaggedWriter(b.root, S.songs_table(split), {"song": {"dtype": "int32", "ref": SONG_REF}})
        self.tag_w = RaggedWriter(b.root, S.tags_table(split), {"tag": {"dtype": "int32", "dictionary": S.DICT_TAG}})
        self.cols: dict[str, list] = {"id": [], "title": [], "like_cnt": [], "updt_date": [], "repeats": []}
        self.repeats = self.tag_repeats = 0
        self.popularity = np.zeros(songs.n, dtype=np.int64) if split == "train" else None

    def encode(self, path: Path, first: int, items: list[S.Playlist]) -> tuple[list[np.ndarray], list[int]]:
        """Song codes per playlist (repeats dropped) and the repeat counts; errors name path and item."""
        out, reps = [], []
        for k, p in enumerate(items):
            try:
                raw = np.asarray(p.songs, dtype=np.int64)
            except OverflowError:
                raise InputError(path, f"item {first + k}, field songs: a song id out of range (int64)") from None
            codes = self.songs.codes(raw)
            if (codes < 0).any():
                j = int(np.flatnonzero(codes < 0)[0])
                raise InputError(path, f"item {first + k}, field songs[{j}]: song id {raw[j]} not in {S.SONG_META}")
            uniq, at = np.unique(codes, return_index=True)
            kept = codes[np.sort(at)] if uniq.size < codes.size else codes
            out.append(kept)
            reps.append(codes.size - kept.size)
        return out, reps

    def add(self, path: Path, first: int, items: list[S.Playlist]) -> None:
        at = S.SPLITS.index(self.split) << 40  # where each id was first seen, packed in one int
        for k, p in enumerate(items):
            if p.id in self.seen:
                where = self.seen[p.id]
                raise InputError(path, f"item {first + k}, field id: playlist id {p.id} seen twice "
                                 f"(first in {S.SPLITS[where >> 40]}.json item {where & ((1 << 40) - 1)})")
            self.seen[p.id] = at | (first + k)
            for field, value, limit in (("id", p.id, 2**63), ("like_cnt", p.like_cnt, 2**31)):
                if not -limit <= value < limit:
                    raise InputError(path, f"item {first + k}, field {field}: {value} out of range")
        codes, reps = self.encode(path, first, items)
        lengths = np.fromiter(map(len, codes), dtype=np.int64, count=len(codes))
        flat = np.concatenate(codes) if codes else np.empty(0, dtype=np.int64)
        self.song_w.append(lengths, {"song": flat})
        if self.popularity is not None and flat.size:
            self.popularity += np.bincount(flat, minlength=self.songs.n)
        tag_codes = [[self.tags.add(t) for t in dict.fromkeys(p.tags)] for p in items]
        self.tag_repeats += sum(len(p.tags) for p in items) - sum(map(len, tag_codes))
        tag_lengths = np.fromiter(map(len, tag_codes), dtype=np.int64, count=len(items))
        self.tag_w.append(tag_lengths, {"tag": np.fromiter((t for r in tag_codes for t in r), dtype=np.int64,
                                                           count=int(tag_lengths.sum()))})
        c = self.cols
        c["id"] += [p.id for p in items]
        c["title"] += [p.plylst_title for p in items]
        c["like_cnt"] += [p.like_cnt for p in items]
        c["updt_date"] += [p.updt_date for p in items]
        c["repeats"] += reps
        self.repeats += sum(reps)

    def finish(self) -> None:
        split = self.split
        self.b.table(S.songs_table(split), self.song_w.close(split=split))
        self.b.table(S.tags_table(split), self.tag_w.close(split=split))
        c = self.cols
        table = pa.table({"id": pa.array(c["id"], pa.int64()), "title": pa.array(c["title"], pa.string()),
                          "like_cnt": pa.array(c["like_cnt"], pa.int32()),
                          "updt_date": pa.array(c["updt_date"], pa.string()),
                          "repeats": pa.array(np.minimum(c["repeats"], np.iinfo(np.int16).max), pa.int16())})
        rel = f"tables/{S.playlists_table(split)}.parquet"
        (self.b.stage / "tables").mkdir(exist_ok=True)
        pq.write_table(table, self.b.stage / rel)
        self.b.table(S.playlists_table(split), {"kind": "parquet", "rows": table.num_rows, "path": rel,
                                                "split": split})

    def answers(self, path: Path, progress: Callable[[int], object]) -> int:
        """Read answers/S.json, aligned with this split's questions by id; returns the repeated answer
        songs and tags dropped."""
        row = {pid: i for i, pid in enumerate(self.cols["id"])}
        songs: list[np.ndarray | None] = [None] * len(row)
        tags: list[list[int]] = [[] for _ in row]
        repeats = 0
        for first, items in iter_items(path, S.Playlist, progress=progress):
            codes, reps = self.encode(path, first, items)
            for k, p in enumerate(items):
                i = row.get(p.id)
                if i is None:
                    raise InputError(path, f"item {first + k}, field id: playlist {p.id} is not a question of "
                                     f"{self.split}.json")
                if songs[i] is not None:
                    raise InputError(path, f"item {first + k}, field id: playlist id {p.id} seen twice")
                songs[i] = codes[k]
                tags[i] = [self.tags.add(t) for t in dict.fromkeys(p.tags)]
                repeats += len(p.tags) - len(tags[i])
            repeats += sum(reps)
        missing = [i for i, s in enumerate(songs) if s is None]
        if missing:
            raise InputError(path, f"no answer for playlist {self.cols['id'][missing[0]]} ({self.split}.json item "
                             f"{missing[0]}; {len(missing)} questions unanswered)")
        for table, col, lists, spec in (
                (S.answer_songs_table(self.split), "song", songs, {"dtype": "int32", "ref": SONG_REF}),
                (S.answer_tags_table(self.split), "tag", tags, {"dtype": "int32", "dictionary": S.DICT_TAG})):
            w = RaggedWriter(self.b.root, table, {col: spec})
            lengths = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
            flat = np.fromiter((x for r in lists for x in r), dtype=np.int64, count=int(lengths.sum()))
            w.append(lengths, {col: flat})
            self.b.table(table, w.close(split=self.split, answers=True))
        return repeats


def _read_genres(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise InputError(path, "file missing")
    data = path.read_bytes().removeprefix(codecs.BOM_UTF8)  # a byte-order mark, as in the other JSON files
    if not data.strip():
        raise InputError(path, "empty file (expected a JSON object of genre code -> name)")
    try:
        return msgspec.json.decode(data, type=dict[str, str])
    except msgspec.ValidationError as e:
        raise InputError(path, f"{e} (expected an object of genre code -> name)") from None
    except msgspec.DecodeError as e:
        raise InputError(path, f"invalid JSON ({e})") from None


def discover(raw_dir: Path) -> dict[str, Path]:
    """The release's files present under ``raw_dir``; missing required ones are errors."""
    files = {}
    for name in (S.SONG_META, S.GENRES, "train.json"):
        if not (raw_dir / name).is_file():
            raise InputError(raw_dir / name, "file missing")
        files[name] = raw_dir / name
    for split in S.SPLITS[1:]:
        q, a = raw_dir / f"{split}.json", raw_dir / S.ANSWERS_DIR / f"{split}.json"
        if q.is_file():
            files[q.name] = q
        if a.is_file():
            if not q.is_file():
                raise InputError(q, f"file missing (but {a} exists)")
            files[f"{S.ANSWERS_DIR}/{a.name}"] = a
    return files


def ingest_melon(raw_dir: str | Path, store_path: str | Path, overwrite: bool = False, progress: bool = True,
                 block_bytes: int = BLOCK_BYTES) -> IngestSummary:
    """Ingest a Melon release under ``raw_dir`` into a new store (version) at ``store_path``."""
    raw_dir = Path(raw_dir)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the interpreter and libraries
    refuse_existing(store_path, overwrite)
    files = discover(raw_dir)
    raw_bytes = sum(p.stat().st_size for p in files.values())
    with StoreBuilder(store_path, "melon", overwrite=overwrite, progress=progress, files=len(files),
                      raw_bytes=raw_bytes) as b:
        b.summary = MelonSummary("melon", files=len(files), raw_bytes=raw_bytes, row_unit="playlists")
        bar = b.bar(raw_bytes, "B", "ingest melon")
        genres = _read_genres(files[S.GENRES])
        bar.update(files[S.GENRES].stat().st_size)
        songs = _Songs(b, genres)
        path = files[S.SONG_META]
        for first, items in iter_items(path, S.Song, block_bytes, bar.update):
            try:
                songs.add(items)
            except (ValueError, OverflowError) as e:
                raise InputError(path, f"items {first}..{first + len(items) - 1}: {e}") from None
        songs.finish(path)
        tags = b.dictionary(S.DICT_TAG)
        seen: dict[int, int] = {}
        notes, popularity = [], np.zeros(songs.n, dtype=np.int64)
        for split in S.SPLITS:
            path = files.get(f"{split}.json")
            if path is None:
                notes.append(f"no {split}.json: store has no {split} split")
                continue
            pl_ = _Playlists(b, songs, tags, split, seen)
            for first, items in iter_items(path, S.Playlist, block_bytes, bar.update):
                pl_.add(path, first, items)
            pl_.finish()
            if pl_.popularity is not None:
                popularity = pl_.popularity
            notes.append(f"{split}: {pl_.repeats} repeated songs dropped (kept once) in "
                         f"{sum(1 for r in pl_.cols['repeats'] if r)} playlists"
                         + (f", {pl_.tag_repeats} repeated tags dropped" if pl_.tag_repeats else ""))
            answers = files.get(f"{S.ANSWERS_DIR}/{split}.json")
            if answers is not None:
                reps = pl_.answers(answers, bar.update)
                if reps:
                    notes.append(f"answers/{split}.json: {reps} repeated songs or tags dropped (kept once)")
            elif split != "train":
                notes.append(f"no answers/{split}.json: {split} has questions only")
        b.table(S.SONG_INFO, songs.write_info(popularity))
        if songs.bad_dates:
            notes.append(f"{songs.bad_dates} songs with an unparsable issue_date (date_missing set)")
        unknown = len(songs.genre) + len(songs.detail) - songs.known_genres
        if unknown:
            notes.append(f"{unknown} genre codes used by songs are not in {S.GENRES} (added to the dictionaries)")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        notes.append(f"peak memory {peak:.0f} MB max RSS ({max(peak - rss0, 0):.0f} MB above the process before the "
                     f"ingest; JSON read in {block_bytes / 2**20:g} MiB blocks)")
        b.summary.notes = notes
        b.finish(file_sources(raw_dir, list(files.values())))
    return b.summary
