"""Synthetic Melon Playlist Continuation data (Kakao Arena 2020) in the raw release format, with planted
themes, and the oracle that knows them.

Files written under ``out_dir`` (DATASETS.md section 2): ``train.json``, ``val.json``, ``test.json``
(questions), ``answers/val.json``, ``answers/test.json``, ``song_meta.json``, ``genre_gn_all.json``: JSON
arrays (objects) in UTF-8 with Korean titles, tags and names, and ``_planted/planted.npz`` (not part of
the format: what :func:`oracle_results` reads).

Generator (``K = max(8, songs // 200)`` latent themes):

- **Themes.** Theme sizes are skewed (Dirichlet); every song belongs to one theme. Each theme has a few
  artists (4-30 songs each, one or two albums each, the album fixing issue date), one major genre
  (``GNxx00``) and 1-2 detail genres of it, 6 tags (its own two-word tags plus shared one-word tags) with
  Zipf weights, and 3 title words.
- **Popularity.** Within a theme, songs have Zipf weights (exponent :data:`SONG_ZIPF`) over a random rank;
  the background (noise) distribution is a global Zipf over all songs; tags likewise.
- **Playlists.** One theme (60 %) or two (40 %, weights w and 1 - w, w ~ U(0.5, 0.9)). Song count
  log-normal (median 20, 2..200); each song comes from a chosen theme with probability
  ``1 - SONG_NOISE`` (themes picked by weight), else from the background; repeats are redrawn (a few
  train playlists get one planted repeated song, which ingest counts). 1-5 tags, each from a theme with
  probability ``1 - TAG_NOISE``; title: 1-2 words of the main theme plus a generic word, or (15 %) only a
  generic title.
- **Quirks.** issue_date ``00000000`` (2 %), month ``00`` (3 %) or day ``00`` (4 %); empty genre baskets
  (1 %) and artist baskets (0.5 %); a few songs without album; like_cnt heavy-tailed; updt_date
  ``YYYY-MM-DD HH:MM:SS.000`` between 2005 and 2020.
- **Splits.** Playlist ids are a random subset of ``0..1.03 n``; 80 / 13 / 7 % go to train / val / test;
  val and test become questions as ``featurestore.ingest.melon_split`` makes them (official categories).

Memory is bounded at the real sizes (708K songs, 149K playlists): songs and playlists are generated and
written in blocks; only per-song arrays (a few bytes each) live for the whole run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import msgspec
import numpy as np

from ..ingest.json_array import iter_items
from ..ingest.melon_split import ArrayWriter, make_questions
from ..schemas import melon as S
from ..store.errors import FstoreError
from ..store.folders import prepare_out_dir
from .audio_common import tree_size
from .planted import planted_file, read_npz

__all__ = ["MelonSynthSummary", "oracle_results", "synth_melon"]

SONG_ZIPF, TAG_ZIPF, BACKGROUND_ZIPF = 0.9, 1.0, 1.1
SONG_NOISE, TAG_NOISE = 0.15, 0.2
TWO_THEMES = 0.4
SPLIT_SHARES = (0.80, 0.13, 0.07)
PLANTED = "_planted/planted.npz"
BLOCK = 20_000
MIN_SONGS = 300

_SYLLABLES = list("가나다라마바사아자차카타파하고노도로모보소오조초코토포호구누두루무부수우주추쿠투푸후민진선영미연지은혜")
_WORDS = ("드라이브 여름 감성 힙합 카페 새벽 운동 비오는날 신나는 잔잔한 발라드 재즈 인디 사랑 이별 출근길 퇴근길 공부 "
          "집중 파티 여행 봄 가을 겨울 밤 아침 휴식 힐링 기분전환 추억 설렘 위로 락 댄스 트로트 클래식 피아노 어쿠스틱 "
          "팝 알앤비 일렉 몽환 그루브 시원한 따뜻한 달달한 우울 감성충전 산책 바다 캠핑 커피 독서 잠 매장음악 "
          "연말 크리스마스 벚꽃 눈 노을 청춘 90년대 2000년대 명곡 OST 국내 해외 보컬 밴드 "
          "걸그룹 보이그룹 랩 뉴에이지 라운지 시티팝 레트로 소울 블루스 펑크 메탈 EDM 하우스").split()
_GENERIC = ["노래 모음", "플레이리스트", "듣기 좋은 노래", "음악", "♥", "추천곡", "베스트", "Playlist", "모음집", "같이 들어요"]
_GENRE_NAMES = ("발라드 댄스 랩/힙합 R&B/Soul 인디음악 록/메탈 성인가요 포크/블루스 일렉트로니카 POP 재즈 클래식 OST "
                "J-POP 뉴에이지 월드뮤직 CCM 어린이/태교 국악 종교음악 키즈 컨트리 라틴 레게 시티팝 트로트 "
                "애니메이션 뮤지컬 동요 명상").split()


@dataclass(frozen=True)
class MelonSynthSummary:
    files: int
    playlists: dict
    songs: int
    themes: int
    bytes: int

    def line(self, out: Path) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in self.playlists.items())
        return (f"wrote {self.files} files to {out}: {self.songs} songs, playlists {counts}, "
                f"{self.themes} planted themes, {self.bytes / 1e6:.1f} MB")


def _zipf(n: int, a: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** a
    return w / w.sum()


def _name(rng: np.random.Generator, lo: int = 2, hi: int = 4) -> str:
    return "".join(rng.choice(_SYLLABLES, size=int(rng.integers(lo, hi + 1))))


class Planted:
    """The generator's parameters: everything the oracle needs, saved to ``_planted/planted.npz``."""

    def __init__(self, n_songs: int, rng: np.random.Generator):
        k = max(8, n_songs // 200)
        self.k = k
        self.song_theme = rng.choice(k, size=n_songs, p=rng.dirichlet(np.full(k, 2.0)))
        self.song_theme[rng.choice(n_songs, size=k, replace=False)] = np.arange(k)  # no theme is empty
        # within-theme Zipf weight by a random rank; cumulative per theme segment, offset by the theme index
        order = np.lexsort((rng.random(n_songs), self.song_theme))
        self.theme_songs = order  # songs grouped by theme
        sizes = np.bincount(self.song_theme, minlength=k)
        self.theme_start = np.concatenate(([0], np.cumsum(sizes)))
        p = np.empty(n_songs)
        for t in range(k):
            a, b = self.theme_start[t], self.theme_start[t + 1]
            p[a:b] = _zipf(b - a, SONG_ZIPF)
        self.song_p = np.empty(n_songs)
        self.song_p[order] = p  # p(song | its theme)
        self.cum = np.concatenate([np.cumsum(p[self.theme_start[t]:self.theme_start[t + 1]]) + t for t in range(k)])
        self.background = rng.permutation(n_songs)  # background rank -> song
        self.background_p = _zipf(n_songs, BACKGROUND_ZIPF)
        self.background_cum = np.cumsum(self.background_p)
        # tags: shared one-word tags and per-theme two-word tags
        words = list(_WORDS)
        own = {f"{words[i]}{words[j]}" for i, j in rng.integers(0, len(words), size=(4 * k, 2)) if i != j}
        own_list = sorted(own - set(words))  # a compound may spell a one-word tag ("감성충전"): one text, one tag
        rng.shuffle(own_list)
        self.tags = words + own_list
        theme_tags = np.empty((k, 6), dtype=np.int64)
        for t in range(k):
            shared = rng.choice(len(words), size=3, replace=False)
            mine = len(words) + (np.arange(3) + 3 * t) % len(own_list)
            theme_tags[t] = np.concatenate([mine[:2], shared[:2], mine[2:], shared[2:]])
        self.theme_tags = theme_tags
        self.theme_tag_p = _zipf(6, TAG_ZIPF)
        self.background_tag_p = _zipf(len(self.tags), BACKGROUND_ZIPF)
        self.background_tags = rng.permutation(len(self.tags))
        self.theme_words = np.stack([rng.choice(len(words), size=3, replace=False) for _ in range(k)])
        self.theme_genre = rng.integers(1, len(_GENRE_NAMES) + 1, size=k)

    def save(self, path: Path, playlist_ids: np.ndarray, themes: np.ndarray, weights: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            np.savez_compressed(f, song_theme=self.song_theme, song_p=self.song_p, background=self.background,
                                background_p=self.background_p, tags=np.array(self.tags), theme_tags=self.theme_tags,
                                theme_tag_p=self.theme_tag_p, background_tags=self.background_tags,
                                background_tag_p=self.background_tag_p, playlist_ids=playlist_ids,
                                playlist_themes=themes, playlist_weights=weights)

    def draw_songs(self, rng: np.random.Generator, themes: np.ndarray, n: int) -> np.ndarray:
        """``n`` song draws (with repeats) from theme indices ``themes`` (one per draw; -1 = background)."""
        u = rng.random(n)
        out = np.empty(n, dtype=np.int64)
        bg = themes < 0
        if bg.any():
            out[bg] = self.background[np.minimum(np.searchsorted(self.background_cum, u[bg]), len(self.background) - 1)]
        th = ~bg
        if th.any():
            t = themes[th]
            pos = np.searchsorted(self.cum, t + u[th] * (1 - 1e-12))
            pos = np.clip(pos, self.theme_start[t], self.theme_start[t + 1] - 1)
            out[th] = self.theme_songs[pos]
        return out


def _genres() -> dict[str, str]:
    out = {}
    for g, name in enumerate(_GENRE_NAMES, start=1):
        out[f"GN{g:02d}00"] = name
        out[f"GN{g:02d}01"] = "세부장르전체"
        for d in range(2, 6):
            out[f"GN{g:02d}{d:02d}"] = f"{name} {d - 1}"
    return out


def _write_songs(path: Path, planted: Planted, rng: np.random.Generator, progress: bool) -> None:
    from tqdm import tqdm

    n = planted.song_theme.size
    enc = msgspec.json.Encoder()
    # artists: contiguous runs of each theme's songs (grouped order), 4..30 songs each, one or two albums
    artist_of = np.empty(n, dtype=np.int64)
    album_of = np.empty(n, dtype=np.int64)
    a = al = 0
    for t in range(planted.k):
        lo, hi = planted.theme_start[t], planted.theme_start[t + 1]
        i = lo
        while i < hi:
            j = min(hi, i + int(rng.integers(4, 31)))
            artist_of[planted.theme_songs[i:j]] = a
            split = int(rng.integers(i, j + 1))
            album_of[planted.theme_songs[i:split]] = al
            album_of[planted.theme_songs[split:j]] = al + 1
            a, al, i = a + 1, al + 2, j
    artist_ids = rng.permutation(a * 3)[:a] + 1
    album_ids = rng.permutation(al * 5)[:al] + 1
    album_year = rng.integers(1960, 2021, size=al)
    album_month = rng.integers(1, 13, size=al)
    album_day = rng.integers(1, 29, size=al)
    quirk = rng.random(al)
    artist_names = [_name(rng) for _ in range(a)]
    with open(path, "wb") as f, tqdm(total=n, unit="song", desc="synth song_meta", disable=not progress) as bar:
        f.write(b"[")
        for lo in range(0, n, BLOCK):
            items = []
            for s in range(lo, min(n, lo + BLOCK)):
                t, ar, alb = planted.song_theme[s], artist_of[s], album_of[s]
                g = int(planted.theme_genre[t])
                r = rng.random(4)
                genre = [] if r[0] < 0.01 else [f"GN{g:02d}00"]
                # the theme's detail genre, and for 30 % of the songs a second one of the same major genre
                details = sorted({2 + t % 4, 2 + (s + t) % 4})[: 1 + int(r[3] < 0.3)]
                detail = [f"GN{g:02d}{d:02d}" for d in details] if genre else []
                q = quirk[alb]
                date = ("00000000" if q < 0.02 else f"{album_year[alb]}0000" if q < 0.05  # month (and day) 00
                        else f"{album_year[alb]}{album_month[alb]:02d}00" if q < 0.09
                        else f"{album_year[alb]}{album_month[alb]:02d}{album_day[alb]:02d}")
                no_album = r[1] < 0.001
                no_artist = r[2] < 0.005
                items.append({
                    "song_gn_dtl_gnr_basket": detail,
                    "issue_date": date,
                    "album_name": None if no_album else f"{artist_names[ar]} {alb % 7 + 1}집",
                    "album_id": None if no_album else int(album_ids[alb]),
                    "artist_id_basket": [] if no_artist else [int(artist_ids[ar])],
                    "song_name": _name(rng, 2, 6),
                    "song_gn_gnr_basket": genre,
                    "artist_name_basket": [] if no_artist else [artist_names[ar]],
                    "id": s,
                })
            for i, item in enumerate(items):
                f.write(b"\n" if lo == 0 and i == 0 else b",\n")
                f.write(enc.encode(item))
            bar.update(len(items))
        f.write(b"\n]\n")


def _playlists(planted: Planted, rng: np.random.Generator, ids: np.ndarray, repeats: bool
               ) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """Playlists with the given ids; also their themes (n, 2; -1 = none) and the first theme's weight."""
    n = ids.size
    k = planted.k
    themes = np.full((n, 2), -1, dtype=np.int64)
    themes[:, 0] = rng.integers(0, k, size=n)
    two = rng.random(n) < TWO_THEMES
    themes[two, 1] = (themes[two, 0] + rng.integers(1, k, size=int(two.sum()))) % k
    weights = np.where(two, rng.uniform(0.5, 0.9, size=n), 1.0)
    lengths = np.clip(np.round(np.exp(rng.normal(np.log(20), 0.7, size=n))), 2, 200).astype(int)
    n_tags = rng.integers(1, 6, size=n)
    start = datetime(2005, 1, 1)
    out = []
    for i in range(n):
        m = lengths[i]
        draws = 2 * m + 10
        pick = np.where(rng.random(draws) < weights[i], themes[i, 0], themes[i, 1])
        pick = np.where(pick < 0, themes[i, 0], pick)
        pick[rng.random(draws) < SONG_NOISE] = -1
        songs = list(dict.fromkeys(planted.draw_songs(rng, pick, draws).tolist()))[:m]
        if repeats and rng.random() < 0.01 and len(songs) > 2:
            songs.insert(int(rng.integers(1, len(songs))), songs[0])
        tags: list[int] = []
        while len(tags) < n_tags[i]:
            if rng.random() < TAG_NOISE:
                tag = int(planted.background_tags[rng.choice(len(planted.tags), p=planted.background_tag_p)])
            else:
                t = themes[i, 0] if themes[i, 1] < 0 or rng.random() < weights[i] else themes[i, 1]
                tag = int(planted.theme_tags[t, rng.choice(6, p=planted.theme_tag_p)])
            if tag not in tags:
                tags.append(tag)
        if rng.random() < 0.15:
            title = str(rng.choice(_GENERIC))
        else:
            words = [_WORDS[w] for w in rng.choice(planted.theme_words[themes[i, 0]], size=int(rng.integers(1, 3)),
                                                       replace=False)]
            title = " ".join(words) + (" " + str(rng.choice(_GENERIC)) if rng.random() < 0.6 else "")
        updt = start + timedelta(seconds=int(rng.integers(0, 15 * 365 * 86400)))
        out.append({"tags": [planted.tags[t] for t in tags], "id": int(ids[i]), "plylst_title": title,
                    "songs": songs, "like_cnt": int(min(rng.pareto(1.2) * 4, 100_000)),
                    "updt_date": updt.strftime("%Y-%m-%d %H:%M:%S") + ".000"})
    return out, themes, weights


def synth_melon(out_dir: str | Path, playlists: int = 15_000, songs: int = 30_000, seed: int = 0,
                overwrite: bool = False, progress: bool = True) -> MelonSynthSummary:
    """Write a synthetic Melon release (see the module docstring) under ``out_dir``."""
    from tqdm import tqdm

    if playlists < 20 or songs < MIN_SONGS:
        raise FstoreError(f"--playlists {playlists} --songs {songs}: need at least 20 playlists and {MIN_SONGS} songs "
                          "(100 recommendations besides a question's songs)")
    out = prepare_out_dir(out_dir, overwrite)
    rng = np.random.default_rng(seed)
    planted = Planted(songs, rng)
    genres = _genres()
    (out / S.GENRES).write_bytes(msgspec.json.encode(genres))
    _write_songs(out / S.SONG_META, planted, rng, progress)
    ids = np.sort(rng.choice(int(playlists * 1.03) + 10, size=playlists, replace=False))
    split = rng.choice(3, size=playlists, p=SPLIT_SHARES)
    (out / S.ANSWERS_DIR).mkdir()
    writers = {s: ArrayWriter(out / f"{s}.json") for s in S.SPLITS}
    answers = {s: ArrayWriter(out / S.ANSWERS_DIR / f"{s}.json") for s in ("val", "test")}
    all_themes, all_weights = np.empty((playlists, 2), dtype=np.int64), np.empty(playlists)
    order = rng.permutation(playlists)  # file order is not id order
    with tqdm(total=playlists, unit="playlist", desc="synth melon", disable=not progress) as bar:
        for lo in range(0, playlists, BLOCK):
            block = order[lo:lo + BLOCK]
            for si, s in enumerate(S.SPLITS):
                rows = block[split[block] == si]
                items, themes, weights = _playlists(planted, rng, ids[rows], repeats=s == "train")
                all_themes[rows], all_weights[rows] = themes, weights
                if s == "train":
                    writers[s].extend(items)
                else:
                    questions, ans = make_questions(items, rng)
                    writers[s].extend(questions)
                    answers[s].extend(ans)
            bar.update(block.size)
    for w in [*writers.values(), *answers.values()]:
        w.close()
    planted.save(out / PLANTED, ids, all_themes, all_weights)
    files = [p for p in out.rglob("*") if p.is_file()]
    return MelonSynthSummary(files=len(files), playlists={s: w.n for s, w in writers.items()}, songs=songs,
                             themes=planted.k, bytes=tree_size(files))


def oracle_results(raw_dir: str | Path, split: str = "val") -> list[dict]:
    """Recommendations for ``split``'s questions from an oracle that knows each playlist's planted themes
    and weights and the generator's probabilities: songs and tags ranked by their probability under the
    playlist's mixture (never an item of the question), 100 songs and 10 tags, raw ids and texts."""
    raw = Path(raw_dir)
    z = read_npz(planted_file(raw, PLANTED, "melon"))
    pos = {int(p): i for i, p in enumerate(z["playlist_ids"])}
    song_theme, song_p = z["song_theme"], z["song_p"]
    bg_p = np.empty(song_p.size)
    bg_p[z["background"]] = z["background_p"]
    tags = z["tags"].tolist()
    tag_bg = np.empty(len(tags))
    tag_bg[z["background_tags"]] = z["background_tag_p"]
    members = [np.flatnonzero(song_theme == t) for t in range(int(song_theme.max()) + 1)]
    top = [m[np.argsort(-song_p[m], kind="stable")][:400] for m in members]
    bg_top = np.argsort(-bg_p, kind="stable")[:400]
    out = []
    for _, block in iter_items(raw / f"{split}.json", S.Playlist):
        for q in block:
            i = pos[q.id]
            th, w = z["playlist_themes"][i], z["playlist_weights"][i]
            mix = [(int(th[0]), float(w))] + ([(int(th[1]), 1 - float(w))] if th[1] >= 0 else [])
            cand = np.unique(np.concatenate([bg_top] + [top[t] for t, _ in mix]))
            score = SONG_NOISE * bg_p[cand]
            for t, wt in mix:
                score = score + (1 - SONG_NOISE) * wt * np.where(song_theme[cand] == t, song_p[cand], 0.0)
            ranked = cand[np.argsort(-score, kind="stable")]
            asked = set(q.songs)
            songs = [int(s) for s in ranked[: S.N_SONGS + len(asked)] if int(s) not in asked][: S.N_SONGS]
            tag_score = TAG_NOISE * tag_bg.copy()
            for t, wt in mix:
                np.add.at(tag_score, z["theme_tags"][t], (1 - TAG_NOISE) * wt * z["theme_tag_p"])
            asked_tags = set(q.tags)
            best = np.argsort(-tag_score, kind="stable")[: S.N_TAGS + len(asked_tags)]
            tag_list = [tags[j] for j in best if tags[j] not in asked_tags][: S.N_TAGS]
            out.append({"id": q.id, "songs": songs, "tags": tag_list})
    return out
