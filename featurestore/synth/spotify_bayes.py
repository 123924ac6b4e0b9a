"""The Bayes-optimal skip_2 predictor under the planted model of :mod:`featurestore.synth.spotify`.

Given a session's first half, the posterior over its two hidden quantities (propensity ``u_s`` and
taste ``a_s``) is computed exactly on a grid, then the skip chain is propagated forward through the
second half from the last observed skip (the transition and track terms are known from the tracks).
A numba kernel does it session by session, so memory is the input arrays and one grid row.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import polars as pl

from ..schemas.mssd import first_half_length
from . import spotify as planted

__all__ = ["planted_skip_probability"]

_first_half = numba.njit(first_half_length)


def _as_bool(s: pl.Series) -> np.ndarray:
    """A skip column as a bool array: accepts Boolean, ``True``/``False`` text or 0/1; nulls are False."""
    if s.dtype == pl.Boolean:
        return s.fill_null(False).to_numpy()
    if s.dtype == pl.String:
        return s.str.to_lowercase().is_in(["true", "1"]).fill_null(False).to_numpy()
    return (s.fill_null(0).cast(pl.Int64) != 0).to_numpy()


def planted_skip_probability(log: pl.DataFrame, track_features: pl.DataFrame, grid_size: int = 41,
                             taste_grid_size: int = 21) -> pl.DataFrame:
    """Bayes-optimal ``P(skip_2 = True)`` for every second-half row, under the planted model.

    ``log`` holds whole sessions: ``session_id``, ``session_position``, ``session_length``,
    ``track_id_clean`` for every row and ``skip_2`` for the first-half rows (e.g. a test prehistory
    concatenated with its ``log_input``; second-half ``skip_2`` values are ignored and may be null).
    ``track_features`` must be the whole track table (the standardisations of ``planted_track_terms``
    are over all its rows). Propensity and taste are integrated out on a ``grid_size`` x
    ``taste_grid_size`` grid over +-4 standard deviations of their priors.

    Returns ``session_id, session_position, p_skip_2`` for the rows with ``2 * position > length``,
    sorted by ``session_id`` then ``session_position``.
    """
    f, g, mood = planted.planted_track_terms(track_features)
    terms = pl.DataFrame({"track_id_clean": track_features["track_id"], "_f": f, "_g": g, "_m": mood})
    cols = ["session_id", "session_position", "session_length", "track_id_clean"]
    df = log.select(*cols, pl.col("skip_2") if "skip_2" in log.columns else pl.lit(None).alias("skip_2"))
    df = df.with_columns(pl.col("session_position").cast(pl.Int64), pl.col("session_length").cast(pl.Int64))
    df = df.join(terms, on="track_id_clean", how="left").sort(["session_id", "session_position"])
    sess = df["session_id"].rle_id().to_numpy()
    pos = df["session_position"].to_numpy() - 1
    n_sess = int(sess[-1]) + 1 if len(sess) else 0
    width = int(pos.max()) + 1 if len(pos) else 0
    known = np.zeros((n_sess, width))
    known[sess, pos] = planted._known_logit(df["_f"].fill_null(0.0).to_numpy(), df["_m"].fill_null(0.0).to_numpy(),
                                            pos + 1)
    taste = np.zeros((n_sess, width))
    taste[sess, pos] = df["_g"].fill_null(0.0).to_numpy()
    y = np.zeros((n_sess, width), dtype=np.bool_)
    y[sess, pos] = _as_bool(df["skip_2"])
    length = np.zeros(n_sess, dtype=np.int64)
    length[sess] = df["session_length"].to_numpy()

    # the prior grid over (propensity, taste), flattened; one taste point when the taste term is off
    zu = np.linspace(-4.0, 4.0, grid_size)
    za = np.linspace(-4.0, 4.0, taste_grid_size) if planted.USER_TASTE_SD > 0 else np.zeros(1)
    u = np.repeat(planted.USER_PROPENSITY_SD * zu, za.size)
    a = np.tile(planted.USER_TASTE_SD * za, zu.size)
    log_prior = -0.5 * (np.repeat(zu**2, za.size) + np.tile(za**2, zu.size))
    prob = np.zeros((n_sess, width))
    _chain_posterior(known, taste, y, length, u, a, log_prior, planted.SKIP_INTERCEPT,
                     planted.PREVIOUS_SKIP_WEIGHT, prob)
    second = (2 * (pos + 1)) > df["session_length"].to_numpy()
    return pl.DataFrame({
        "session_id": df["session_id"].filter(pl.Series(second)),
        "session_position": (pos[second] + 1).astype(np.int64),
        "p_skip_2": prob[sess[second], pos[second]],
    })


@numba.njit(cache=True, nogil=True)
def _softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


@numba.njit(cache=True, nogil=True)
def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@numba.njit(cache=True, nogil=True)
def _chain_posterior(known, taste, y, length, u, a, log_prior, intercept, w_prev, out):  # pragma: no cover
    """``out[s, p]``: P(skip_2) of every second-half position ``p`` of every session ``s``."""
    n_grid = u.size
    weight = np.empty(n_grid)
    p_prev = np.empty(n_grid)
    for s in range(known.shape[0]):
        half = _first_half(length[s])
        top = -np.inf
        for g in range(n_grid):  # log posterior of each grid point given the first half
            ll = log_prior[g]
            for p in range(half):
                z = intercept + u[g] + a[g] * taste[s, p] + known[s, p]
                if p > 0:
                    z += w_prev if y[s, p - 1] else -w_prev
                ll -= _softplus(-z) if y[s, p] else _softplus(z)
            weight[g] = ll
            top = max(top, ll)
        total = 0.0
        for g in range(n_grid):
            weight[g] = math.exp(weight[g] - top)
            total += weight[g]
        last = 1.0 if half > 0 and y[s, half - 1] else 0.0
        for g in range(n_grid):
            weight[g] /= total
            p_prev[g] = last
        for p in range(half, length[s]):  # forward through the second half, per grid point
            acc = 0.0
            for g in range(n_grid):
                base = intercept + u[g] + a[g] * taste[s, p] + known[s, p]
                step = _sigmoid(base) if p == 0 else (
                    p_prev[g] * _sigmoid(base + w_prev) + (1.0 - p_prev[g]) * _sigmoid(base - w_prev))
                p_prev[g] = step
                acc += weight[g] * step
            out[s, p] = acc
