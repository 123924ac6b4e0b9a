"""Spotify MSSD: how each column is parsed from CSV, how it is stored, what a loader batch carries,
and the session split rule. The one place for all of these (synth, ingest, loaders, model)."""

from __future__ import annotations

import polars as pl

# --- session logs (training_set/log_*.csv, test_set/log_prehistory_*.csv) -----------------------
LOG_CSV: dict[str, pl.DataType] = {
    "session_id": pl.Utf8,
    "session_position": pl.Int32,
    "session_length": pl.Int32,
    "track_id_clean": pl.Utf8,
    "skip_1": pl.Boolean,
    "skip_2": pl.Boolean,
    "skip_3": pl.Boolean,
    "not_skipped": pl.Boolean,
    "context_switch": pl.UInt8,
    "no_pause_before_play": pl.UInt8,
    "short_pause_before_play": pl.UInt8,
    "long_pause_before_play": pl.UInt8,
    "hist_user_behavior_n_seekfwd": pl.UInt16,
    "hist_user_behavior_n_seekback": pl.UInt16,
    "hist_user_behavior_is_shuffle": pl.Boolean,
    "hour_of_day": pl.UInt8,
    "date": pl.Date,
    "premium": pl.Boolean,
    "context_type": pl.Utf8,
    "hist_user_behavior_reason_start": pl.Utf8,
    "hist_user_behavior_reason_end": pl.Utf8,
}
INPUT_CSV = {c: LOG_CSV[c] for c in ("session_id", "session_position", "session_length", "track_id_clean")}

# 0/1 integer flags (the booleans above are True/False text)
FLAG_COLUMNS = ["context_switch", "no_pause_before_play", "short_pause_before_play", "long_pause_before_play"]
BOOL_COLUMNS = ["skip_1", "skip_2", "skip_3", "not_skipped", "hist_user_behavior_is_shuffle", "premium"]
CATEGORICAL_COLUMNS = ["context_type", "hist_user_behavior_reason_start", "hist_user_behavior_reason_end"]
COUNT_COLUMNS = ["hist_user_behavior_n_seekfwd", "hist_user_behavior_n_seekback"]

# Stored event columns: name -> metadata. "track" references the tracks table by row code;
# dictionary columns reference dicts/<name>.parquet; dates are days since 1970-01-01.
EVENT_COLUMNS: dict[str, dict] = {
    "track": {"dtype": "int32", "ref": "tracks", "source": "track_id_clean"},
    **{c: {"dtype": "uint8", "type": "bool"} for c in BOOL_COLUMNS},
    **{c: {"dtype": "uint8", "type": "bool"} for c in FLAG_COLUMNS},
    **{c: {"dtype": "uint16", "type": "count"} for c in COUNT_COLUMNS},
    "hour_of_day": {"dtype": "uint8", "type": "int"},
    "date": {"dtype": "int32", "type": "days_since_epoch"},
    **{c: {"dtype": "uint8", "dictionary": c} for c in CATEGORICAL_COLUMNS},
}

MIN_SESSION_LENGTH, MAX_SESSION_LENGTH = 1, 255  # real data: 10..20; we accept any length a uint8 holds
SYNTH_SESSION_LENGTHS = (10, 20)  # the real data's range, which the synthetic generator draws from

# Known vocabularies of the open categorical columns (ingest adds any other value it meets)
CONTEXT_TYPES: tuple[str, ...] = (
    "editorial_playlist", "user_collection", "catalog", "radio", "charts", "personalized_playlist",
)
REASONS: tuple[str, ...] = (
    "appload", "trackdone", "clickrow", "fwdbtn", "backbtn", "remote", "trackerror", "playbtn", "endplay",
    "popup", "clickside", "uriopen", "logout",
)

KNOWN_VALUES: dict[str, tuple[str, ...]] = {  # what the ingest parser expects in each open column
    "context_type": CONTEXT_TYPES,
    "hist_user_behavior_reason_start": REASONS,
    "hist_user_behavior_reason_end": REASONS,
}



def log_parse_schema(vocabularies: dict[str, list[str]] | None = None) -> dict[str, pl.DataType]:
    """``LOG_CSV`` with each open categorical parsed straight to codes: an Enum of the vocabulary so
    far (``vocabularies``, in code order) followed by the known values it lacks, so that no text
    column is built. The ingest maps those codes to its vocabulary; a value outside the Enum makes
    the reader parse that column as text instead."""
    out = dict(LOG_CSV)
    for c, known in KNOWN_VALUES.items():
        values = list((vocabularies or {}).get(c, []))
        have = set(values)
        out[c] = pl.Enum(values + [v for v in known if v not in have])
    return out


# --- track features (track_features/tf_*.csv) ----------------------------------------------------
TRACK_ID = "track_id"
TRACK_FEATURES: list[str] = [
    "duration", "release_year", "us_popularity_estimate", "acousticness", "beat_strength", "bounciness",
    "danceability", "dyn_range_mean", "energy", "flatness", "instrumentalness", "key", "liveness", "loudness",
    "mechanism", "mode", "organism", "speechiness", "tempo", "time_signature", "valence",
    *[f"acoustic_vector_{i}" for i in range(8)],
]
MODE_LABELS = ["major", "minor"]  # the one text feature: stored exactly as code 0/1
TRACK_CSV: dict[str, pl.DataType] = {
    TRACK_ID: pl.Utf8,
    **{c: (pl.Utf8 if c == "mode" else pl.Float64) for c in TRACK_FEATURES},
}


# --- sessions as a model sees them ----------------------------------------------------------------
# The per-event log bytes a loader batch carries (``ctx_log``), in this order (one byte each).
BATCH_LOG_COLUMNS: list[str] = [
    "skip_1", "skip_2", "skip_3", "not_skipped", "context_switch", "no_pause_before_play",
    "short_pause_before_play", "long_pause_before_play", "hist_user_behavior_n_seekfwd",
    "hist_user_behavior_n_seekback", "hist_user_behavior_is_shuffle", "hour_of_day", "premium",
    "context_type", "hist_user_behavior_reason_start", "hist_user_behavior_reason_end",
]
TARGET = "skip_2"  # the challenge's label
MAX_HALF = 10  # MSSD sessions have 10..20 tracks: at most 10 in each half


def first_half_length(length):
    """Tracks in the first half of a session of ``length`` tracks, the MSSD rule: 0-based positions
    p < length // 2 are context (their logs are given), the rest are to be predicted. Works on ints,
    numpy arrays and tensors; numba kernels use ``numba.njit(first_half_length)``."""
    return length // 2
