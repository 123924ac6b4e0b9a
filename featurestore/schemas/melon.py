"""Melon Playlist Continuation (Kakao Arena 2020, DATASETS.md section 2): raw file names and fields, the
store layout, and the output contract. The one place for these (synth, ingest, split, loader, model).

Store layout (every name below is a table in the store's manifest; codes are dense, 0..n-1):

- ``songs``-side tables, one row per song code (song code == row of ``ids/songs.parquet``, which holds
  the raw song id as text; ingest assigns codes in song_meta.json order):
  - ``song_artists``  ragged, column ``artist`` int32 (dictionary ``artist``: raw artist id as text)
  - ``song_genres``   ragged, column ``genre`` int16 (dictionary ``genre``: e.g. "GN0900")
  - ``song_detail_genres`` ragged, column ``detail_genre`` int16 (dictionary ``detail_genre``)
  - ``song_info``     zarr group of 1-D columns (kind ``columns``): ``album`` int32 (dictionary ``album``,
    -1 when missing), ``issue_year`` int16 (0 when missing), ``issue_month`` int8 (0 when missing),
    ``date_missing`` bool (issue_date ``00000000`` or unparsable), ``popularity`` int32 (train playlists
    holding the song: what "most popular" baselines and vocabulary filters read)
- per split ``S`` in :data:`SPLITS` present in the raw folder, one row per playlist in file order:
  - ``S_songs``  ragged, column ``song`` int32 (song codes; the question's songs for val/test)
  - ``S_tags``   ragged, column ``tag`` int32 (dictionary ``tag``: tag text)
  - ``S_playlists`` Parquet ``tables/S_playlists.parquet``: ``id`` int64, ``title`` string, ``like_cnt``
    int32, ``updt_date`` string (as given), ``repeats`` int16 (songs dropped as repeats in this playlist)
  - when answers exist for S (``answers/S.json`` or a split made by ``fstore split melon``):
    ``S_answer_songs`` / ``S_answer_tags`` ragged, rows aligned with ``S_songs``.

Repeated songs within one playlist: kept once (first position), counted per playlist and in the ingest
summary. The official answers never repeat a song, so keeping duplicates would only weight the input.
Repeated tags likewise (counted in the summary). Ragged ``song`` columns carry ``ref: song_info`` (codes
are rows of song_info, so ``fstore validate`` range-checks them); tag, artist and genre columns carry
their ``dictionary``. Raw records are decoded with the typed :class:`Playlist` and :class:`Song` below.
"""

from __future__ import annotations

import msgspec

# --- raw files -------------------------------------------------------------------------------------
SPLITS = ("train", "val", "test")
SONG_META = "song_meta.json"
GENRES = "genre_gn_all.json"
ANSWERS_DIR = "answers"  # answers/val.json (and answers/test.json when known)

PLAYLIST_FIELDS = {  # field -> JSON type(s) accepted
    "id": (int,),
    "plylst_title": (str,),
    "tags": (list,),
    "songs": (list,),
    "like_cnt": (int,),
    "updt_date": (str,),
}
SONG_FIELDS = {
    "id": (int,),
    "song_gn_dtl_gnr_basket": (list,),
    "song_gn_gnr_basket": (list,),
    "issue_date": (str,),
    "album_name": (str, type(None)),
    "album_id": (int, type(None)),
    "artist_id_basket": (list,),
    "artist_name_basket": (list,),
    "song_name": (str, type(None)),
}


class Playlist(msgspec.Struct):
    """A playlist of train/val/test.json (and of answers/*.json), as the ingest decodes it (typed: a wrong
    type is an error naming the field). Field order is the release's."""

    tags: list[str]
    id: int
    plylst_title: str
    songs: list[int]
    like_cnt: int
    updt_date: str


class Song(msgspec.Struct):
    """A song of song_meta.json."""

    song_gn_dtl_gnr_basket: list[str]
    issue_date: str
    album_name: str | None
    album_id: int | None
    artist_id_basket: list[int]
    song_name: str | None
    song_gn_gnr_basket: list[str]
    artist_name_basket: list[str]
    id: int


UPDT_DATE_FORMAT = "%Y-%m-%d %H:%M:%S.000"
MISSING_ISSUE_DATE = "00000000"

# --- store tables ----------------------------------------------------------------------------------
SONG_IDS = "songs"  # ids/songs.parquet: raw song id per song code
SONG_ARTISTS, SONG_GENRES, SONG_DETAIL_GENRES, SONG_INFO = "song_artists", "song_genres", "song_detail_genres", "song_info"
DICT_TAG, DICT_ARTIST, DICT_GENRE, DICT_DETAIL_GENRE, DICT_ALBUM = "tag", "artist", "genre", "detail_genre", "album"


def songs_table(split: str) -> str:
    return f"{split}_songs"


def tags_table(split: str) -> str:
    return f"{split}_tags"


def playlists_table(split: str) -> str:
    return f"{split}_playlists"


def answer_songs_table(split: str) -> str:
    return f"{split}_answer_songs"


def answer_tags_table(split: str) -> str:
    return f"{split}_answer_tags"


# --- output (results.json) -------------------------------------------------------------------------
N_SONGS, N_TAGS = 100, 10  # exactly this many unique items per playlist
RESULTS = "results.json"  # [{"id": playlist id, "songs": [100 song ids], "tags": [10 tags]}, ...]
