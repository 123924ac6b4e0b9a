"""Synthetic Spotify Music Streaming Sessions Dataset (MSSD, WSDM Cup 2019) in the raw release format.

Layout written under ``out_dir`` (DATASETS.md section 1; ``.csv.gz`` instead of ``.csv`` with ``gzip=True``)::

    training_set/log_{k}_{YYYYMMDD}_000000000000.csv         k = 0..train_files-1, dates 2018-07-15 + k days
    track_features/tf_000000000000.csv, tf_000000000001.csv   the track table, split in two halves
    test_set/log_prehistory_{YYYYMMDD}_000000000000.csv      first half of each test session, all log columns
    test_set/log_input_{YYYYMMDD}_000000000000.csv           second half: session_id, session_position,
                                                             session_length, track_id_clean only
    test_set/ground_truth_{YYYYMMDD}_000000000000.csv        second half with all log columns

The test date is the day after the last training date. ``ground_truth_*`` is **not** part of the real
release (the organisers withheld the second-half labels); it is written here so that local scoring works.
"First half" means the rows with ``2 * session_position <= session_length``, exactly as in the challenge.
Gzip output uses compression level 1 and a zero header timestamp, so it is fast and byte-reproducible;
decompressed, it equals the plain output.

Format details, as in the real files: session rows are contiguous and ordered by ``session_position``
1..``session_length`` with ``10 <= session_length <= 20`` (about 40 % of the sessions have length 20, the
rest are uniform on 10..19, about 16.8 rows per session as in ``log_mini.csv``); each session lies wholly in
one file and the sessions of a file are sorted by ``session_id``. ``skip_1/2/3``, ``not_skipped``,
``hist_user_behavior_is_shuffle`` and ``premium`` are the literal text ``True``/``False``;
``context_switch`` and the three pause flags are ``0``/``1``; ``date`` is ISO ``YYYY-MM-DD`` and constant
within a session (the file's date). Session ids look like ``0_00006f66-33e5-4de7-a324-2d18e439fc1e``
(prefix = the training shard number ``k``; the test set uses ``train_files``), track ids like
``t_0479f24c-27d2-46d6-a00c-7ec928f2b539``; both are uuid4-shaped hex drawn from the seeded generator, so a
seed reproduces byte-identical files. Track-feature floats are written with 6 decimals.

Behaviour columns (not part of the planted signal below, but realistic): ``premium`` (80 % True) and
``is_shuffle`` (30 % True) per session; ``hour_of_day`` per session (evening-heavy), moving to the next hour
part-way through 5 % of the sessions; ``context_type`` per session, with one ``context_switch`` (a change
of ``context_type``) in 12 % of the sessions; pause flags all 0 at position 1, otherwise exclusive
(no pause 82 %, short 10 %, long 8 %); seek counts mostly 0. Skip nesting as in the real data:
``skip_1 => skip_2 => skip_3``, with ``P(skip_1 | skip_2) = 0.8``, ``P(skip_3 | not skip_2) = 0.27``,
``not_skipped = not skip_3`` except 3 % of the unskipped rows where both are False. ``reason_end`` follows
the skip (an early skip mostly ``fwdbtn``, a completed track mostly ``trackdone``); ``reason_start`` of a
row copies the previous row's ``reason_end`` 92 % of the time. Track popularity is Zipf-like
(``P(rank r) ~ 1 / (r + 10)``, ranks mapped to tracks by a random permutation).

PLANTED SIGNAL (the prediction target ``skip_2``). For session ``s`` with user propensity
``u_s ~ Normal(0, 1.6)`` and taste ``a_s ~ Normal(0, 1.5)`` drawn once per session, the row at position
``i`` playing track ``t_i`` has::

    logit P(skip_2 = True) = 0.0 + u_s + f(t_i) + [i > 1] * 0.8 * (+1 if skip_2 at i-1 else -1)
                             + a_s * z(valence of t_i)                                    (taste)
                             + [i > 1] * 1.5 * (|z(tempo of t_i) - z(tempo of t_(i-1))| - 2 / sqrt(pi))
                                                                                          (transition)
    f(t) = 1.2 * z(energy) + 1.0 * z(acoustic_vector_0) - 0.9 * z(danceability)

where ``z(x) = (x - mean) / std`` is the standardisation over the whole written track table (population std,
of the values as written with 6 decimals; the three features of ``f`` are drawn independently of each
other, so ``std(f) = 1.8``; other features are correlated with them, e.g. loudness and acousticness with
energy). Nothing else (premium, shuffle, context, hour) enters ``skip_2``. The overall skip rate is about
0.5 (the transition term is centred: ``2 / sqrt(pi)`` is the mean jump between two independent standard
normal values).

The two sequence terms are what real sessions have and a per-row linear model cannot see: a listener's
taste (here: how much they like happy songs) shows only in how the first half's skips go with the first
half's tracks, and a jarring change of tempo from one track to the next is skipped more. A logistic
regression on first-half statistics plus the row's own track features (``models/skip/logreg.py``) sees
neither; a sequence model over both halves can learn both. Knobs (module-level constants; set one to 0 to
remove its term): ``USER_TASTE_SD`` (with ``TASTE_FEATURE``), ``TRANSITION_WEIGHT`` (with
``TRANSITION_FEATURE``), and the original ``USER_PROPENSITY_SD``, ``PREVIOUS_SKIP_WEIGHT``,
``TRACK_LOGIT_WEIGHTS``, ``SKIP_INTERCEPT``. Measured on the test split of the default release
(``fstore synth spotify``: 18,000 train and 2,000 test sessions), after ``fstore train skip --max-minutes 5``
on this shared 2-core machine (load 22-34, so the model trained on a fraction of a core), mean average
accuracy of model / logistic regression / Bayes-optimal:

    USER_TASTE_SD  TRANSITION_WEIGHT   model   logreg   Bayes   model - logreg   load, epochs trained
    0              0                   0.6720  0.6689   0.6847  +0.003           25-34, 1.7
    1.5            1.5 (the defaults)  0.6376  0.6059   0.6888  +0.032           22, 4.3

Together the two terms cost the regression 0.063 mean AA and the model 0.034, and moved the ceiling by
+0.004 (different releases, one seed each). Each term alone was not measured: at load
30 a 5-minute run trained under one epoch, so those runs were stopped. A transition weight of 2.5 was
tried and not measured for the same reason.

The Bayes-optimal predictor (``featurestore/synth/spotify_bayes.py``: exact posterior over ``(u_s, a_s)``
on a grid given the first half, then forward propagation of the skip chain) is computed by synth for the
test sessions and written to ``_planted/test_skip_2_probability.parquet``, outside the release format;
``fstore evaluate skip ... --raw-dir RAW`` scores it as the ceiling. (For comparison, the real data:
copy-last 0.537, 1st place 0.651.)

Generation is vectorised with numpy (the only Python loops run over the 20 session positions, over
files and over chunks of 25,000 sessions) and written chunk by chunk with polars, so memory stays bounded
for millions of sessions.
"""

from __future__ import annotations

import datetime as _dt
import gzip as _gzip
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from ..schemas import mssd as S
from ..store.folders import prepare_out_dir

__all__ = [
    "BOOL_COLUMNS",
    "CONTEXT_TYPES",
    "FLAG_COLUMNS",
    "INPUT_COLUMNS",
    "LOG_COLUMNS",
    "PREVIOUS_SKIP_WEIGHT",
    "REASONS",
    "SKIP_INTERCEPT",
    "TRACK_FEATURE_COLUMNS",
    "TRACK_LOGIT_WEIGHTS",
    "TRANSITION_FEATURE",
    "TRANSITION_WEIGHT",
    "TASTE_FEATURE",
    "USER_PROPENSITY_SD",
    "USER_TASTE_SD",
    "SynthSummary",
    "PLANTED_TEST_PROBABILITY",
    "planted_track_logit",
    "planted_track_terms",
    "synth_spotify",
]

# --- format -------------------------------------------------------------------------------------------
# the column lists are the schema's (featurestore/schemas/mssd.py), as tuples in file order
LOG_COLUMNS: tuple[str, ...] = tuple(S.LOG_CSV)
INPUT_COLUMNS: tuple[str, ...] = tuple(S.INPUT_CSV)
TRACK_FEATURE_COLUMNS: tuple[str, ...] = (S.TRACK_ID, *S.TRACK_FEATURES)
BOOL_COLUMNS: tuple[str, ...] = tuple(S.BOOL_COLUMNS)
FLAG_COLUMNS: tuple[str, ...] = tuple(S.FLAG_COLUMNS)
CONTEXT_TYPES: tuple[str, ...] = S.CONTEXT_TYPES
REASONS: tuple[str, ...] = S.REASONS
MIN_SESSION_LENGTH, MAX_SESSION_LENGTH = S.SYNTH_SESSION_LENGTHS
START_DATE = _dt.date(2018, 7, 15)
_FILE_SUFFIX = "_000000000000"

# --- planted skip_2 model (see the module docstring) -----------------------------------------------------
SKIP_INTERCEPT = 0.0
USER_PROPENSITY_SD = 1.6
PREVIOUS_SKIP_WEIGHT = 0.8
TRACK_LOGIT_WEIGHTS: dict[str, float] = {"energy": 1.2, "acoustic_vector_0": 1.0, "danceability": -0.9}
# sequence interactions a per-position linear model cannot see (module docstring, "harder knobs")
USER_TASTE_SD = 1.5  # sd of the session's taste a_s, multiplying z(TASTE_FEATURE) of each track
TASTE_FEATURE = "valence"
TRANSITION_WEIGHT = 1.5  # weight of the centred jump |z(tempo_i) - z(tempo_(i-1))| between consecutive tracks
TRANSITION_FEATURE = "tempo"
_MEAN_JUMP = 2.0 / np.sqrt(np.pi)  # E|x - y| for independent standard normals: centres the transition term
PLANTED_TEST_PROBABILITY = "_planted/test_skip_2_probability.parquet"

# --- behaviour distributions ----------------------------------------------------------------------------
_CHUNK_SESSIONS = 25_000
_P_LENGTH_20 = 0.4
_P_PREMIUM, _P_SHUFFLE = 0.8, 0.3
_P_HOUR_SHIFT, _P_CONTEXT_SWITCH = 0.05, 0.12
_P_LONG_PAUSE, _P_SHORT_PAUSE = 0.08, 0.10
_P_SKIP1_GIVEN_SKIP2, _P_SKIP3_GIVEN_NO_SKIP2, _P_NEITHER = 0.8, 0.27, 0.03
_P_START_COPIES_END = 0.92
_ZIPF_OFFSET, _ZIPF_EXPONENT = 10.0, 1.0
_HOUR_WEIGHTS = np.array(
    [3, 2, 1.5, 1, 1, 1.2, 2, 3, 4, 4.5, 5, 5, 5.5, 5.5, 5.5, 6, 6.5, 7, 7, 7, 6.5, 6, 5, 4], dtype=np.float64
)
_CONTEXT_P = np.array([0.30, 0.35, 0.12, 0.08, 0.05, 0.10])  # in CONTEXT_TYPES order


def _reason_p(**weights: float) -> np.ndarray:
    """Probability vector over :data:`REASONS` from keyword weights (missing reasons get 0)."""
    p = np.array([weights.get(r, 0.0) for r in REASONS], dtype=np.float64)
    return p / p.sum()


_START_P = _reason_p(clickrow=0.30, playbtn=0.20, appload=0.15, trackdone=0.15, fwdbtn=0.08, remote=0.05,
                     backbtn=0.03, uriopen=0.02, clickside=0.01, popup=0.01)
_END_P = np.stack([
    # early skip (skip_2)
    _reason_p(fwdbtn=0.72, backbtn=0.08, clickrow=0.07, endplay=0.05, remote=0.02, clickside=0.02, logout=0.01,
              playbtn=0.01, popup=0.005, uriopen=0.005, trackerror=0.005, appload=0.005),
    # late skip (skip_3 but not skip_2)
    _reason_p(fwdbtn=0.60, endplay=0.15, clickrow=0.08, backbtn=0.07, remote=0.03, logout=0.03, clickside=0.02,
              playbtn=0.01, popup=0.005, uriopen=0.005),
    # played through
    _reason_p(trackdone=0.95, endplay=0.02, logout=0.01, fwdbtn=0.01, remote=0.005, trackerror=0.005),
])


@dataclass
class SynthSummary:
    """What :func:`synth_spotify` wrote.

    files: every file written, in writing order (track features, training logs, test files).
    n_train_sessions / n_test_sessions: sessions in ``training_set`` / ``test_set``.
    n_events: log rows over all sessions (training rows + test prehistory rows + test second-half rows).
    n_tracks: rows of the track-feature table.
    planted: ``_planted/test_skip_2_probability.parquet``, the Bayes-optimal second-half probabilities
    (:func:`planted_skip_probability`) of the test sessions; not part of the release format.
    """

    files: list[Path] = field(default_factory=list)
    planted: Path | None = None
    n_train_sessions: int = 0
    n_test_sessions: int = 0
    n_events: int = 0
    n_tracks: int = 0

    @property
    def n_sessions(self) -> int:
        """Training plus test sessions."""
        return self.n_train_sessions + self.n_test_sessions


# --- ids -------------------------------------------------------------------------------------------------
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_UUID_GROUPS = ((0, 8), (8, 12), (12, 16), (16, 20), (20, 32))


def _sorted_uuid_bytes(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random uuid4-shaped 16-byte values, sorted (so their hex strings sort the same way)."""
    b = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    b[:, 6] = (b[:, 6] & 0x0F) | 0x40  # version nibble 4
    b[:, 8] = (b[:, 8] & 0x3F) | 0x80  # variant 10xx
    hi = b[:, :8].copy().view(">u8").ravel()
    lo = b[:, 8:].copy().view(">u8").ravel()
    return b[np.lexsort((lo, hi))]


def _format_ids(b: np.ndarray, prefix: str) -> pl.Series:
    """``prefix + 8-4-4-4-12`` lowercase hex strings of the rows of a ``(n, 16)`` uint8 array."""
    n = b.shape[0]
    nib = np.empty((n, 32), dtype=np.uint8)
    nib[:, 0::2] = b >> 4
    nib[:, 1::2] = b & 0x0F
    hexc = _HEX[nib]
    p = np.frombuffer(prefix.encode("ascii"), dtype=np.uint8)
    width = len(p) + 36
    out = np.empty((n, width), dtype=np.uint8)
    out[:, : len(p)] = p
    col = len(p)
    for g, (a, z) in enumerate(_UUID_GROUPS):
        if g:
            out[:, col] = ord("-")
            col += 1
        out[:, col : col + z - a] = hexc[:, a:z]
        col += z - a
    return pl.Series(out.view(f"S{width}").ravel()).cast(pl.String)


# --- track table -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Tracks:
    """The generated track table and what session generation needs from it."""

    frame: pl.DataFrame  # TRACK_FEATURE_COLUMNS, sorted by track_id
    ids: pl.Series  # track_id, String
    logit: np.ndarray  # planted f(t) per track, float64
    taste: np.ndarray  # z(TASTE_FEATURE) per track, the feature the session's taste multiplies
    mood: np.ndarray  # z(TRANSITION_FEATURE) per track, whose jumps between consecutive tracks are skipped
    cdf: np.ndarray  # popularity cdf over ranks
    rank_to_track: np.ndarray  # popularity rank -> row of ``frame``


def _standardize(x: np.ndarray) -> np.ndarray:
    """``(x - mean) / std`` with the population std (0 where the column is constant)."""
    x = np.asarray(x, dtype=np.float64)
    sd = x.std()
    return (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)


def planted_track_logit(track_features: pl.DataFrame) -> np.ndarray:
    """The planted per-track term ``f(t)`` of the skip_2 logit, one value per row of ``track_features``.

    ``f(t) = sum_k TRACK_LOGIT_WEIGHTS[k] * z(column k)`` with ``z`` standardised over the rows given, so
    pass the whole track table (both ``tf_*`` files) to reproduce the generator's values.
    """
    total = np.zeros(track_features.height, dtype=np.float64)
    for name, w in TRACK_LOGIT_WEIGHTS.items():
        total += w * _standardize(track_features[name].cast(pl.Float64).to_numpy())
    return total


def planted_track_terms(track_features: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(f(t), z(TASTE_FEATURE), z(TRANSITION_FEATURE))`` per row of the whole track table: the three
    per-track quantities of the planted skip_2 logit (module docstring)."""
    def z(name: str) -> np.ndarray:
        return _standardize(track_features[name].cast(pl.Float64).to_numpy())

    return planted_track_logit(track_features), z(TASTE_FEATURE), z(TRANSITION_FEATURE)


def _make_tracks(rng: np.random.Generator, n: int) -> _Tracks:
    """Draw ``n`` tracks with realistic, skewed feature distributions (rounded to the 6 written decimals)."""
    ids = _format_ids(_sorted_uuid_bytes(rng, n), "t_")
    energy = rng.beta(2.5, 2.0, n)
    dance = rng.beta(4.0, 3.0, n)
    acoustic = np.clip(rng.beta(0.6, 1.6, n) * (1.2 - 0.4 * energy), 0.0, 1.0)
    av = np.clip(rng.normal(0.0, 0.35, (8, n)), -1.0, 1.0)
    cols: dict[str, np.ndarray] = {
        "duration": np.clip(rng.lognormal(np.log(215.0), 0.35, n), 30.0, 900.0),
        "release_year": np.clip(2018 - np.floor(rng.exponential(8.0, n)), 1950, 2018).astype(np.int64),
        "us_popularity_estimate": 100.0 - 10.0 * rng.beta(0.6, 6.0, n),
        "acousticness": acoustic,
        "beat_strength": rng.beta(2.0, 3.0, n),
        "bounciness": np.clip(0.6 * dance + 0.4 * rng.beta(2.0, 3.0, n), 0.0, 1.0),
        "danceability": dance,
        "dyn_range_mean": rng.gamma(4.0, 2.0, n),
        "energy": energy,
        "flatness": rng.beta(20.0, 2.0, n),
        "instrumentalness": rng.beta(0.3, 1.5, n),
        "key": rng.choice(12, size=n, p=np.array([12, 8, 10, 5, 9, 9, 6, 11, 7, 10, 6, 7]) / 100.0),
        "liveness": rng.beta(1.2, 6.0, n),
        "loudness": np.clip(-rng.gamma(2.5, 3.2, n) * (1.4 - 0.8 * energy), -60.0, 0.0),
        "mechanism": rng.beta(2.0, 2.0, n),
        "organism": np.clip(0.5 * acoustic + 0.5 * rng.beta(2.0, 3.0, n), 0.0, 1.0),
        "speechiness": rng.beta(1.0, 12.0, n),
        "tempo": np.clip(rng.normal(120.0, 28.0, n), 55.0, 210.0),
        "time_signature": rng.choice(6, size=n, p=[0.005, 0.03, 0.005, 0.10, 0.835, 0.025]),
        "valence": rng.beta(2.0, 2.0, n),
    }
    mode = np.where(rng.random(n) < 0.65, "major", "minor")
    data: dict[str, object] = {"track_id": ids}
    for name in TRACK_FEATURE_COLUMNS[1:]:
        if name == "mode":
            data[name] = pl.Series(mode, dtype=pl.String)
        elif name.startswith("acoustic_vector_"):
            data[name] = np.round(av[int(name.rsplit("_", 1)[1])], 6)
        elif cols[name].dtype.kind == "f":
            data[name] = np.round(cols[name], 6)
        else:
            data[name] = cols[name].astype(np.int64)
    frame = pl.DataFrame(data)
    ranks = np.arange(1, n + 1, dtype=np.float64)
    w = (ranks + _ZIPF_OFFSET) ** -_ZIPF_EXPONENT
    cdf = np.cumsum(w)
    cdf /= cdf[-1]
    logit, taste, mood = planted_track_terms(frame)
    return _Tracks(frame=frame, ids=ids, logit=logit, taste=taste, mood=mood, cdf=cdf,
                   rank_to_track=rng.permutation(n))


# --- sessions ----------------------------------------------------------------------------------------------
def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


_PLANTED_SCHEMA = pa.schema([("session_id", pa.large_string()), ("session_position", pa.int64()),
                             ("p_skip_2", pa.float64())])
_TRUE_FALSE = pl.Series(["False", "True"])
_CONTEXT_SERIES = pl.Series(CONTEXT_TYPES)
_REASON_SERIES = pl.Series(REASONS)


def _known_logit(f: np.ndarray, mood: np.ndarray, position: np.ndarray) -> np.ndarray:
    """The part of each row's skip_2 logit fixed by the tracks alone: ``f(t)`` plus the transition term
    (rows of whole sessions in order, ``position`` 1-based; the first row of a session has no jump)."""
    jump = np.zeros_like(mood)
    jump[1:] = np.abs(mood[1:] - mood[:-1]) - _MEAN_JUMP
    return f + TRANSITION_WEIGHT * np.where(position > 1, jump, 0.0)


def _categorical(rng: np.random.Generator, p: np.ndarray, n: int) -> np.ndarray:
    """``n`` draws of codes ``0..len(p)-1`` with probabilities ``p`` (inverse cdf)."""
    cdf = np.cumsum(p)
    return np.minimum(np.searchsorted(cdf / cdf[-1], rng.random(n), side="right"), len(p) - 1)


def _session_rows(
    rng: np.random.Generator, session_ids: pl.Series, tracks: _Tracks, date: str
) -> pl.DataFrame:
    """All log rows (``LOG_COLUMNS``) of the sessions named ``session_ids``, in file order."""
    n = session_ids.len()
    short_length = rng.integers(MIN_SESSION_LENGTH, MAX_SESSION_LENGTH, n)
    length = np.where(rng.random(n) < _P_LENGTH_20, MAX_SESSION_LENGTH, short_length).astype(np.int64)
    ends = np.cumsum(length)
    starts = ends - length
    n_rows = int(ends[-1]) if n else 0
    sess = np.repeat(np.arange(n), length)
    pos = np.arange(n_rows) - starts[sess] + 1  # 1-based session_position

    # per-session state
    propensity = rng.normal(0.0, USER_PROPENSITY_SD, n)
    taste = rng.normal(0.0, USER_TASTE_SD, n)
    premium = rng.random(n) < _P_PREMIUM
    shuffle = rng.random(n) < _P_SHUFFLE
    hour0 = _categorical(rng, _HOUR_WEIGHTS, n)
    hour_shift_at = np.where(rng.random(n) < _P_HOUR_SHIFT, rng.integers(2, length + 1), 0)
    ctx0 = _categorical(rng, _CONTEXT_P, n)
    ctx1 = (ctx0 + rng.integers(1, len(CONTEXT_TYPES), n)) % len(CONTEXT_TYPES)
    switch_at = np.where(rng.random(n) < _P_CONTEXT_SWITCH, rng.integers(2, length + 1), 0)

    # tracks: Zipf-like popularity
    rank = np.minimum(np.searchsorted(tracks.cdf, rng.random(n_rows), side="right"), len(tracks.cdf) - 1)
    track = tracks.rank_to_track[rank]

    # planted skip_2 chain, vectorised over sessions, one step per position
    f = _known_logit(tracks.logit[track], tracks.mood[track], pos)
    g = tracks.taste[track]
    draw = rng.random(n_rows)
    skip2 = np.zeros(n_rows, dtype=bool)
    for p in range(MAX_SESSION_LENGTH):
        active = np.flatnonzero(length > p)
        rows = starts[active] + p
        logit = SKIP_INTERCEPT + propensity[active] + taste[active] * g[rows] + f[rows]
        if p:
            logit += PREVIOUS_SKIP_WEIGHT * (2.0 * skip2[rows - 1] - 1.0)
        skip2[rows] = draw[rows] < _sigmoid(logit)
    skip1 = skip2 & (rng.random(n_rows) < _P_SKIP1_GIVEN_SKIP2)
    skip3 = skip2 | (rng.random(n_rows) < _P_SKIP3_GIVEN_NO_SKIP2)
    not_skipped = ~skip3 & (rng.random(n_rows) >= _P_NEITHER)

    # context, pauses, seeks, hour
    switched = (switch_at[sess] > 0) & (pos >= switch_at[sess])
    context = np.where(switched, ctx1[sess], ctx0[sess])
    context_switch = (pos == switch_at[sess]).astype(np.int8)
    u = rng.random(n_rows)
    first = pos == 1
    long_pause = (u < _P_LONG_PAUSE) & ~first
    short_pause = (u >= _P_LONG_PAUSE) & (u < _P_LONG_PAUSE + _P_SHORT_PAUSE) & ~first
    no_pause = ~(long_pause | short_pause | first)
    seekfwd = np.where(rng.random(n_rows) < 0.06 + 0.06 * skip3, rng.geometric(0.55, n_rows), 0)
    seekback = np.where(rng.random(n_rows) < 0.04, rng.geometric(0.6, n_rows), 0)
    hour = (hour0[sess] + ((hour_shift_at[sess] > 0) & (pos >= hour_shift_at[sess]))) % 24

    # reasons: reason_end follows the skip; reason_start mostly repeats the previous reason_end
    end_kind = np.where(skip2, 0, np.where(skip3, 1, 2))
    u_end = rng.random(n_rows)
    reason_end = np.empty(n_rows, dtype=np.int64)
    for k in range(_END_P.shape[0]):
        m = end_kind == k
        cdf = np.cumsum(_END_P[k])
        reason_end[m] = np.minimum(np.searchsorted(cdf, u_end[m], side="right"), len(REASONS) - 1)
    reason_start = _categorical(rng, _START_P, n_rows)
    copy = ~first & (rng.random(n_rows) < _P_START_COPIES_END)
    reason_start[copy] = reason_end[np.flatnonzero(copy) - 1]

    def tf(x: np.ndarray) -> pl.Series:
        return _TRUE_FALSE.gather(x.astype(np.uint32))

    return pl.DataFrame(
        {
            "session_id": session_ids.gather(sess),
            "session_position": pos.astype(np.int32),
            "session_length": length[sess].astype(np.int32),
            "track_id_clean": tracks.ids.gather(track),
            "skip_1": tf(skip1),
            "skip_2": tf(skip2),
            "skip_3": tf(skip3),
            "not_skipped": tf(not_skipped),
            "context_switch": context_switch,
            "no_pause_before_play": no_pause.astype(np.int8),
            "short_pause_before_play": short_pause.astype(np.int8),
            "long_pause_before_play": long_pause.astype(np.int8),
            "hist_user_behavior_n_seekfwd": np.minimum(seekfwd, 255).astype(np.int16),
            "hist_user_behavior_n_seekback": np.minimum(seekback, 255).astype(np.int16),
            "hist_user_behavior_is_shuffle": tf(shuffle[sess]),
            "hour_of_day": hour.astype(np.int8),
            "date": pl.repeat(date, n_rows, dtype=pl.String, eager=True),
            "premium": tf(premium[sess]),
            "context_type": _CONTEXT_SERIES.gather(context),
            "hist_user_behavior_reason_start": _REASON_SERIES.gather(reason_start),
            "hist_user_behavior_reason_end": _REASON_SERIES.gather(reason_end),
        }
    )


# --- writing -----------------------------------------------------------------------------------------------
class _CsvSink:
    """One output CSV (optionally gzip), written chunk by chunk with a single header line."""

    def __init__(self, path: Path, gzip: bool) -> None:
        self.path = path
        self._raw: BinaryIO = open(path, "wb")  # closed in close()
        self._fh: BinaryIO = self._raw
        if gzip:  # level 1 for speed, mtime 0 for byte-reproducible output
            self._fh = _gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, compresslevel=1, mtime=0)
        self._header = True

    def write(self, df: pl.DataFrame, **kwargs: object) -> None:
        df.write_csv(self._fh, include_header=self._header, **kwargs)  # type: ignore[arg-type]
        self._header = False

    def close(self) -> None:
        if self._fh is not self._raw:
            self._fh.close()
        self._raw.close()


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` ranges covering ``0..n`` in pieces of at most ``size``; one empty range for 0."""
    if n == 0:
        yield 0, 0
        return
    for a in range(0, n, size):
        yield a, min(n, a + size)


def _empty_log() -> pl.DataFrame:
    return pl.DataFrame(schema=dict.fromkeys(LOG_COLUMNS, pl.String))


def _write_sessions(
    seq: np.random.SeedSequence, n: int, prefix: str, tracks: _Tracks, date: str, sinks: Sequence[_CsvSink],
    planted: pq.ParquetWriter | None = None,
) -> int:
    """Generate ``n`` sessions and write them to ``sinks``; returns the number of log rows generated.

    One sink: the whole log. Three sinks: (prehistory, input, ground truth) of a test set, and then
    ``planted`` gets the Bayes-optimal second-half probabilities of each chunk.
    """
    chunks = list(_chunks(n, _CHUNK_SESSIONS))
    id_seq, *chunk_seqs = seq.spawn(1 + len(chunks))
    ids = _format_ids(_sorted_uuid_bytes(np.random.default_rng(id_seq), n), prefix)
    rows = 0
    for (a, b), cseq in zip(chunks, chunk_seqs, strict=True):
        rng = np.random.default_rng(cseq)
        df = _session_rows(rng, ids.slice(a, b - a), tracks, date) if b > a else _empty_log()
        rows += df.height
        if len(sinks) == 1:
            sinks[0].write(df)
            continue
        pos = df["session_position"].cast(pl.Int32)
        first_half = pos <= S.first_half_length(df["session_length"].cast(pl.Int32))
        second = df.filter(~first_half)
        sinks[0].write(df.filter(first_half))
        sinks[1].write(second.select(INPUT_COLUMNS))
        sinks[2].write(second)
        if planted is not None and df.height:
            from .spotify_bayes import planted_skip_probability  # numba: only a test set pays for it

            planted.write_table(planted_skip_probability(df, tracks.frame).to_arrow())
    return rows


def synth_spotify(
    out_dir: str | Path,
    sessions: int = 20000,
    tracks: int = 5000,
    seed: int = 0,
    train_files: int = 4,
    test_fraction: float = 0.1,
    gzip: bool = False,
    overwrite: bool = False,
) -> SynthSummary:
    """Write a synthetic MSSD release under ``out_dir`` (layout and planted signal: see the module doc).

    ``sessions`` are split into ``round(sessions * test_fraction)`` test sessions and the rest, which are
    spread as evenly as possible over ``train_files`` training logs (each session wholly in one file).
    ``tracks`` rows of track features are written and every logged track id is one of them. The same
    arguments always produce byte-identical files. Returns a :class:`SynthSummary`.
    """
    if sessions < 1 or tracks < 1 or train_files < 1:
        raise ValueError("sessions, tracks and train_files must be >= 1")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError("test_fraction must be in [0, 1)")
    out = prepare_out_dir(out_dir, overwrite)
    ext = ".csv.gz" if gzip else ".csv"
    n_test = round(sessions * test_fraction)
    n_train = sessions - n_test
    summary = SynthSummary(n_train_sessions=n_train, n_test_sessions=n_test, n_tracks=tracks)
    track_seq, train_seq, test_seq = np.random.SeedSequence(seed).spawn(3)

    table = _make_tracks(np.random.default_rng(track_seq), tracks)
    (out / "track_features").mkdir(parents=True, exist_ok=True)
    half = (tracks + 1) // 2
    for i, (a, b) in enumerate(((0, half), (half, tracks))):
        sink = _CsvSink(out / "track_features" / f"tf_{i:012d}{ext}", gzip)
        try:
            sink.write(table.frame.slice(a, b - a), float_precision=6)
        finally:
            sink.close()
        summary.files.append(sink.path)

    (out / "training_set").mkdir(parents=True, exist_ok=True)
    sizes = [len(c) for c in np.array_split(np.arange(n_train), train_files)]
    for k, (n_k, seq) in enumerate(zip(sizes, train_seq.spawn(train_files), strict=True)):
        day = (START_DATE + _dt.timedelta(days=k))
        sink = _CsvSink(out / "training_set" / f"log_{k}_{day:%Y%m%d}{_FILE_SUFFIX}{ext}", gzip)
        try:
            summary.n_events += _write_sessions(seq, n_k, f"{k}_", table, day.isoformat(), [sink])
        finally:
            sink.close()
        summary.files.append(sink.path)

    (out / "test_set").mkdir(parents=True, exist_ok=True)
    day = START_DATE + _dt.timedelta(days=train_files)
    sinks = [
        _CsvSink(out / "test_set" / f"{kind}_{day:%Y%m%d}{_FILE_SUFFIX}{ext}", gzip)
        for kind in ("log_prehistory", "log_input", "ground_truth")
    ]
    # the generator's truth, outside the release format (ingest never reads _planted/)
    summary.planted = out / PLANTED_TEST_PROBABILITY
    summary.planted.parent.mkdir(parents=True, exist_ok=True)
    planted = pq.ParquetWriter(summary.planted, _PLANTED_SCHEMA)
    try:
        summary.n_events += _write_sessions(test_seq, n_test, f"{train_files}_", table, day.isoformat(), sinks,
                                            planted)
    finally:
        for s in sinks:
            s.close()
        planted.close()
    summary.files.extend(s.path for s in sinks)
    return summary
