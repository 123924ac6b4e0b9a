"""numba kernels of the Melon recommendation passes: exact top-k selection and the fused scoring pass.

``torch.topk`` on the CPU (``ATen/native/TopKImpl.h``) copies each row into a vector of (value, index)
pairs and, when ``64 k <= n``, runs ``std::partial_sort`` on it: libstdc++'s heap selection
(``__heap_select``) and ``__sort_heap`` with the comparator ``x.value > y.value``. Which of several equal
values it keeps, and in which order, follows from those heap moves. :func:`heap_topk_push` and friends
replay exactly those moves (``bits/stl_heap.h``: ``__adjust_heap``, ``__push_heap``, ``__make_heap``,
``__pop_heap``), so a row streamed item by item, never materialised, gives the very indices that
``torch.topk`` gives on the materialised row, ties included. That is what lets the passes below score
708K songs per playlist without a (playlists x songs) matrix and still reproduce the dense path's
recommendations bit for bit.

Scores follow ``recommend._pick``: NaN is no opinion (-inf), +inf the largest float32, the question's
own items -inf; rows with fewer than ``k`` valid candidates are filled from the popularity order.
"""

from __future__ import annotations

import numba
import numpy as np

NEG = np.float32(-np.inf)
FMAX = np.float32(np.finfo(np.float32).max)
TINY = np.float32(1e-12)  # recommend.normalise's span floor, as float32


# --- libstdc++'s heap, comparator "greater value" ---------------------------------------------------

@numba.njit(inline="always", nogil=True, cache=True)
def _adjust_heap(hv, hi, p, hole, length, v, i):
    top = hole
    second = hole
    while second < (length - 1) // 2:
        second = 2 * (second + 1)
        if hv[p, second] > hv[p, second - 1]:
            second -= 1
        hv[p, hole] = hv[p, second]
        hi[p, hole] = hi[p, second]
        hole = second
    if (length & 1) == 0 and second == (length - 2) // 2:
        second = 2 * (second + 1)
        hv[p, hole] = hv[p, second - 1]
        hi[p, hole] = hi[p, second - 1]
        hole = second - 1
    parent = (hole - 1) // 2
    while hole > top and hv[p, parent] > v:
        hv[p, hole] = hv[p, parent]
        hi[p, hole] = hi[p, parent]
        hole = parent
        parent = (hole - 1) // 2
    hv[p, hole] = v
    hi[p, hole] = i


@numba.njit(inline="always", nogil=True, cache=True)
def _make_heap(hv, hi, p, length):
    if length < 2:
        return
    parent = (length - 2) // 2
    while True:
        _adjust_heap(hv, hi, p, parent, length, hv[p, parent], hi[p, parent])
        if parent == 0:
            return
        parent -= 1


@numba.njit(inline="always", nogil=True, cache=True)
def heap_topk_push(hv, hi, p, k, j, v):
    """Offer item ``j`` with value ``v`` to heap ``p`` (rows of ``hv``/``hi``: values, indices), items in
    index order from 0: ``__heap_select``'s step."""
    if j < k:
        hv[p, j] = v
        hi[p, j] = j
        if j == k - 1:
            _make_heap(hv, hi, p, k)
    elif v > hv[p, 0]:
        _adjust_heap(hv, hi, p, 0, k, v, j)


@numba.njit(inline="always", nogil=True, cache=True)
def heap_topk_finish(hv, hi, p, k):
    """``__sort_heap``: heap ``p`` becomes the top ``k`` in torch.topk's order (largest first)."""
    last = k
    while last > 1:
        last -= 1
        v = hv[p, last]
        i = hi[p, last]
        hv[p, last] = hv[p, 0]
        hi[p, last] = hi[p, 0]
        _adjust_heap(hv, hi, p, 0, last, v, i)


@numba.njit(inline="always", nogil=True, cache=True)
def _clean(v):
    """``torch.nan_to_num(nan=-inf, posinf=max, neginf=-inf)``."""
    v = v if v == v else NEG
    return FMAX if v == np.inf else v


@numba.njit(inline="always", nogil=True, cache=True)
def _fill(out, hv, k, prior_order, scores, masked, row):
    """Positions from the first -inf on: the most popular items without an opinion (``scores[row]``,
    raw) and outside the question (``_pick``'s fill). Returns False when there are not enough."""
    n_valid = 0
    while n_valid < k and hv[0, n_valid] > NEG:
        n_valid += 1
    pos = n_valid
    for t in range(prior_order.size):
        if pos == k:
            break
        j = prior_order[t]
        if masked[j] or _clean(scores[row, j]) > NEG:
            continue
        out[row, pos] = j
        pos += 1
    return pos == k


@numba.njit(parallel=True, nogil=True, cache=True)
def topk_dense(scores, q_offsets, q_values, rows, k, prior_order, out, n_chunks):
    """``_pick`` on a dense (B, n) float32 matrix, for ``64 k <= n``: top ``k`` codes per row into
    ``out`` (B, k) int64, never a question item, popular fill. Returns the first row that could not be
    filled, or -1. Rows are split over ``n_chunks`` threads."""
    b, n = scores.shape
    bad = np.full(b, -1, dtype=np.int64)
    for c in numba.prange(n_chunks):
        hv = np.empty((1, k), dtype=np.float32)
        hi = np.empty((1, k), dtype=np.int64)
        masked = np.zeros(n, dtype=np.bool_)
        for r in range(c, b, n_chunks):
            q = rows[r]
            for t in range(q_offsets[q], q_offsets[q + 1]):
                masked[q_values[t]] = True
            for j in range(n):
                heap_topk_push(hv, hi, 0, k, j, NEG if masked[j] else _clean(scores[r, j]))
            heap_topk_finish(hv, hi, 0, k)
            for t in range(k):
                out[r, t] = hi[0, t]
            if hv[0, k - 1] == NEG and not _fill(out, hv, k, prior_order, scores, masked, r):
                bad[r] = r
            for t in range(q_offsets[q], q_offsets[q + 1]):
                masked[q_values[t]] = False
    for r in range(b):
        if bad[r] >= 0:
            return r
    return -1


# --- the fused pass: co-occurrence, blends and selection, one playlist at a time -------------------
#
# Components (c): 0 co-occurrence (computed here from the train matrices), 1 the autoencoder, 2 the
# title model (each given as a (B, V) matrix over its own vocabulary and a store code -> column map, -1
# outside the vocabulary: no opinion), 3 none (no opinion anywhere: popularity alone). A predictor p is a component (raw[p] = c) or a blend (raw[p] =
# -1) of parts in order, part m a component or, when parts[p, m] = INNER, the blend inner_parts[p] /
# inner_weights[p] (recommend.blend's output, normalised again); weights are per playlist. Per
# playlist, each component is spread over the store's items once (a scratch row) with its normalised
# row, then each predictor is one tight loop over the items into its heap. The arithmetic is
# recommend.blend's in float32 and in the same order: values are bit-identical to the dense path's.

COOC, DAE, TITLE, NONE, INNER = 0, 1, 2, 3, 4


@numba.njit(inline="always", nogil=True, cache=True)
def _finite(x):
    return (x > NEG) & (x < np.inf)


@numba.njit(nogil=True, cache=True)
def _range(x, lo_hi, c):
    """Widen ``lo_hi[c]`` (min, max) by the finite values of ``x``."""
    lo, hi = lo_hi[c, 0], lo_hi[c, 1]
    for j in range(x.size):
        v = x[j]
        if _finite(v):
            lo = min(lo, v)
            hi = max(hi, v)
    lo_hi[c, 0], lo_hi[c, 1] = lo, hi


@numba.njit(nogil=True, cache=True)
def _ranges_to_norm(lo_hi, lo, span, ok):
    """``recommend.normalise``'s constants per row of ``lo_hi``: min, max(max - min, 1e-12), max > min."""
    for c in range(lo_hi.shape[0]):
        ok[c] = lo_hi[c, 1] > lo_hi[c, 0]
        lo[c] = lo_hi[c, 0]
        span[c] = max(lo_hi[c, 1] - lo_hi[c, 0], TINY)


@numba.njit(nogil=True, cache=True)
def _normalise(x, out, m, lo, span, ok):
    """``recommend.normalise`` of ``x[:m]`` into ``out[:m]``: selects, not jumps, so it vectorises."""
    for t in range(m):
        v = x[t]
        y = (v - lo) / span
        out[t] = y if ok & _finite(v) else np.float32(0.0)


@numba.njit(nogil=True, cache=True)
def _tile_components(j0, m, acc, dae_row, dae_map, title_row, title_map, lo, span, ok, x, nr, need):
    """Items ``j0 .. j0 + m - 1``: the ``need``-ed component values into ``x[c, :m]`` (0 co-occurrence, 1
    autoencoder, 2 title; row 3, none, is -inf throughout) and their normalised values into ``nr[c, :m]``.
    NaN is no opinion, as -inf (``normalise`` and ``_pick`` treat both alike)."""
    if need[COOC]:
        x[COOC, :m] = acc[j0:j0 + m]
    if need[DAE]:
        for t in range(m):
            c = dae_map[j0 + t]  # -1: outside the model's vocabulary (a clamped read, then a select: no jump)
            v = dae_row[max(c, 0)]
            x[DAE, t] = v if (c >= 0) & (v == v) else NEG
    if need[TITLE]:
        for t in range(m):
            c = title_map[j0 + t]
            v = title_row[max(c, 0)]
            x[TITLE, t] = v if (c >= 0) & (v == v) else NEG
    for c in range(3):
        if need[c]:
            _normalise(x[c], nr[c], m, lo[c], span[c], ok[c])


@numba.njit(nogil=True, cache=True)
def _tile_blend(x, nr, rows_of, w, n_parts, out, m):
    """``recommend.blend`` of parts ``rows_of[:n_parts]`` (rows of ``x`` / ``nr``) with weights ``w`` into
    ``out[:m]``: float32, parts summed in order, -inf where no part with a positive weight has an
    opinion."""
    if n_parts == 2:  # every blend here: one branch-free loop that vectorises
        a, b = rows_of[0], rows_of[1]
        w0, w1 = w[0], w[1]
        has0, has1 = w0 > 0, w1 > 0
        for t in range(m):
            total = w0 * nr[a, t] + w1 * nr[b, t]
            opinion = (has0 & _finite(x[a, t])) | (has1 & _finite(x[b, t]))
            out[t] = total if opinion else NEG
        return
    for t in range(m):
        total = np.float32(0.0)
        opinion = False
        for q in range(n_parts):
            total = total + w[q] * nr[rows_of[q], t]
            opinion = opinion | ((w[q] > 0) & _finite(x[rows_of[q], t]))
        out[t] = total if opinion else NEG


@numba.njit(nogil=True, cache=True)
def _tile_values(p, raw, rows_of, w, n_parts, in_rows_of, in_w, in_parts, in_lo, in_span, in_ok, x, nr, out, m):
    """Predictor ``p``'s scores of the tile into ``out[:m]`` (components already in ``x`` / ``nr``); an inner
    blend goes through row INNER of ``x`` / ``nr``."""
    c = raw[p]
    if c >= 0:
        for t in range(m):
            out[t] = x[c, t]
        return
    if in_parts[p] > 0:
        _tile_blend(x, nr, in_rows_of[p], in_w[p], in_parts[p], x[INNER], m)
        _normalise(x[INNER], nr[INNER], m, in_lo[p], in_span[p], in_ok[p])
    _tile_blend(x, nr, rows_of[p], w[p], n_parts[p], out, m)


@numba.njit(nogil=True, cache=True)
def _tile_select(v, m, j0, masked, hv, hi, p, k):
    """``_pick`` on the tile: nan_to_num, question items -inf, then heap ``p``'s selection in item order.
    An item not above the heap's least value when the tile starts cannot enter (that value only rises):
    such items are skipped by one comparison, exactly as ``__heap_select`` skips them."""
    t = 0
    while t < m and j0 + t < k:  # the heap's first k items
        heap_topk_push(hv, hi, p, k, j0 + t, NEG if masked[j0 + t] else _clean(v[t]))
        t += 1
    least = hv[p, 0]
    while t < m:
        # a raw value not above the least cannot be above it cleaned (NaN and -inf stay -inf, +inf
        # becomes the largest float) or masked (-inf): one comparison for almost every item
        if v[t] > least:
            y = NEG if masked[j0 + t] else _clean(v[t])
            if y > least:
                _adjust_heap(hv, hi, p, 0, k, y, j0 + t)
                least = hv[p, 0]
        t += 1


TILE = 2048


@numba.njit(parallel=True, nogil=True, cache=True)
def fused_topk(rows, k, n, q_off, q_val,
               qs_off, qs_val, qt_off, qt_val, song_norm, tag_q_weight,
               song_play_ptr, song_play, tag_play_ptr, tag_play, play_off, play_val, side_norm, n_play, need_cooc,
               dae, dae_map, title, title_map,
               raw, parts, weights, inner_parts, inner_weights, prior_order, out, dense_out, n_chunks):
    """Top ``k`` of every predictor for the playlists ``rows`` of a split, on one side (songs or tags:
    ``n`` items, ``q_off``/``q_val`` the question's items of that side, ``play_off``/``play_val`` the train
    playlists' items of that side, ``side_norm`` their 1/sqrt(count)). Co-occurrence hits come from both
    question sides (``qs_*`` songs with weight ``song_norm``, ``qt_*`` tags with ``tag_q_weight``) through
    the item -> train playlist lists ``*_play_ptr``/``*_play``. ``out``: (P, B, k) int64 codes. Returns
    the first (batch row, predictor) that could not be filled, as b * P + p, or -1. With a (P, B, n)
    ``dense_out`` (for ``64 k > n``, where torch.topk sorts differently) the predictors' scores are
    written there instead, for ``recommend._pick``.

    Per playlist: the co-occurrence row (scratch) and each component's range, then tiles of items:
    components and normalised components once, every predictor's scores from them, each predictor's
    heap fed in item order. A blend over an inner blend needs that blend's range first: the first pass
    stores the inner blend's values, a second pass selects from them."""
    n_pred, width = parts.shape
    b_rows = rows.size
    dense = dense_out.shape[0] > 0
    bad = np.full(b_rows, -1, dtype=np.int64)
    for chunk in numba.prange(n_chunks):
        masked = np.zeros(n, dtype=np.bool_)
        acc = np.empty(n, dtype=np.float32)
        hs = np.zeros(n_play if need_cooc else 0, dtype=np.float32)
        ht = np.zeros(n_play if need_cooc else 0, dtype=np.float32)
        x = np.empty((5, TILE), dtype=np.float32)  # rows: COOC, DAE, TITLE, NONE, INNER
        nr = np.zeros((5, TILE), dtype=np.float32)
        x[NONE] = NEG
        v = np.empty(TILE, dtype=np.float32)
        hv = np.empty((n_pred, k), dtype=np.float32)
        hi = np.empty((n_pred, k), dtype=np.int64)
        lo_hi = np.empty((4, 2), dtype=np.float32)
        lo = np.zeros(4, dtype=np.float32)
        span = np.ones(4, dtype=np.float32)
        ok = np.zeros(4, dtype=np.bool_)
        in_hl = np.empty((n_pred, 2), dtype=np.float32)
        in_lo = np.zeros(n_pred, dtype=np.float32)
        in_span = np.ones(n_pred, dtype=np.float32)
        in_ok = np.zeros(n_pred, dtype=np.bool_)
        rows_of = np.zeros((n_pred, width), dtype=np.int64)
        w = np.zeros((n_pred, width), dtype=np.float32)
        n_parts = np.zeros(n_pred, dtype=np.int64)
        in_rows_of = np.zeros((n_pred, width), dtype=np.int64)
        in_w = np.zeros((n_pred, width), dtype=np.float32)
        in_parts = np.zeros(n_pred, dtype=np.int64)
        need = np.zeros(3, dtype=np.bool_)  # the components any predictor reads
        need_outer = np.zeros(3, dtype=np.bool_)  # ... that a predictor over an inner blend reads directly
        for p in range(n_pred):
            if 0 <= raw[p] < NONE:
                need[raw[p]] = True
            for q in range(width):
                if parts[p, q] >= 0:
                    rows_of[p, q] = parts[p, q]
                    n_parts[p] = q + 1
                if inner_parts[p, q] >= 0:
                    in_rows_of[p, q] = inner_parts[p, q]
                    in_parts[p] = q + 1
        has_inner = (raw < 0) & (in_parts > 0)
        in_slot = np.cumsum(has_inner) - 1
        n_inner = int(has_inner.sum())
        inner_store = np.empty((n_inner, n), dtype=np.float32)
        for p in range(n_pred):
            for q in range(width):
                c = parts[p, q]
                if 0 <= c < NONE:
                    need[c] = True
                    need_outer[c] = need_outer[c] | has_inner[p]
                c = inner_parts[p, q]
                if 0 <= c < NONE:
                    need[c] = True
        for b in range(chunk, b_rows, n_chunks):
            r = rows[b]
            for p in range(n_pred):
                for q in range(width):
                    w[p, q] = weights[p, q, b]
                    in_w[p, q] = inner_weights[p, q, b]
            for t in range(q_off[r], q_off[r + 1]):
                masked[q_val[t]] = True
            lo_hi[:, 0] = np.inf
            lo_hi[:, 1] = -np.inf
            if need_cooc:
                # hits per train playlist: scipy's (q_songs X_s^T + q_tags X_t^T), each sum in question order
                for t in range(qs_off[r], qs_off[r + 1]):
                    i = qs_val[t]
                    h = song_norm[i]
                    for u in range(song_play_ptr[i], song_play_ptr[i + 1]):
                        hs[song_play[u]] += h
                for t in range(qt_off[r], qt_off[r + 1]):
                    i = qt_val[t]
                    h = tag_q_weight[i]
                    for u in range(tag_play_ptr[i], tag_play_ptr[i + 1]):
                        ht[tag_play[u]] += h
                # X^T hits: each item's sum over its train playlists in playlist order
                acc[:] = 0.0
                for pl in range(n_play):
                    h = hs[pl] + ht[pl]
                    if h != 0:
                        for u in range(play_off[pl], play_off[pl + 1]):
                            acc[play_val[u]] += h
                for j in range(n):
                    y = acc[j] * side_norm[j]
                    acc[j] = y if y > 0 else NEG
                _range(acc, lo_hi, COOC)
                for t in range(qs_off[r], qs_off[r + 1]):
                    i = qs_val[t]
                    for u in range(song_play_ptr[i], song_play_ptr[i + 1]):
                        hs[song_play[u]] = 0.0
                for t in range(qt_off[r], qt_off[r + 1]):
                    i = qt_val[t]
                    for u in range(tag_play_ptr[i], tag_play_ptr[i + 1]):
                        ht[tag_play[u]] = 0.0
            else:
                acc[:] = NEG
            dae_row, title_row = dae[b], title[b]
            _range(dae_row, lo_hi, DAE)  # the model's outputs: what the store's row holds besides -inf
            _range(title_row, lo_hi, TITLE)
            _ranges_to_norm(lo_hi, lo, span, ok)
            # pass 1: every item once; predictors without an inner blend are selected now, the inner
            # blends are stored with their range (normalise needs it before any of them is used)
            for p in range(n_pred):
                in_hl[p, 0] = np.inf
                in_hl[p, 1] = -np.inf
            for j0 in range(0, n, TILE):
                m = min(TILE, n - j0)
                _tile_components(j0, m, acc, dae_row, dae_map, title_row, title_map, lo, span, ok, x, nr, need)
                for p in range(n_pred):
                    if raw[p] == NONE and not dense:  # no opinion anywhere: the popular fill below, no heap
                        continue
                    if has_inner[p]:
                        y = inner_store[in_slot[p], j0:j0 + m]
                        _tile_blend(x, nr, in_rows_of[p], in_w[p], in_parts[p], y, m)
                        _range(y, in_hl, p)
                        continue
                    _tile_values(p, raw, rows_of, w, n_parts, in_rows_of, in_w, in_parts, in_lo, in_span, in_ok,
                                 x, nr, v, m)
                    if dense:
                        dense_out[p, b, j0:j0 + m] = v[:m]
                    else:
                        _tile_select(v, m, j0, masked, hv, hi, p, k)
            # pass 2, predictors over an inner blend: its stored values normalised, the other parts again
            if n_inner:
                _ranges_to_norm(in_hl, in_lo, in_span, in_ok)
                for j0 in range(0, n, TILE):
                    m = min(TILE, n - j0)
                    _tile_components(j0, m, acc, dae_row, dae_map, title_row, title_map, lo, span, ok, x, nr,
                                     need_outer)
                    for p in range(n_pred):
                        if has_inner[p]:
                            x[INNER, :m] = inner_store[in_slot[p], j0:j0 + m]
                            _normalise(x[INNER], nr[INNER], m, in_lo[p], in_span[p], in_ok[p])
                            _tile_blend(x, nr, rows_of[p], w[p], n_parts[p], v, m)
                            if dense:
                                dense_out[p, b, j0:j0 + m] = v[:m]
                            else:
                                _tile_select(v, m, j0, masked, hv, hi, p, k)
            for p in range(0 if dense else n_pred):
                pos = 0  # then _pick's fill: popular items without an opinion, outside the question
                if raw[p] != NONE:
                    heap_topk_finish(hv, hi, p, k)
                    for t in range(k):
                        out[p, b, t] = hi[p, t]
                    if hv[p, k - 1] > NEG:
                        continue
                    while pos < k and hv[p, pos] > NEG:
                        pos += 1
                for t in range(prior_order.size):
                    if pos == k:
                        break
                    j = prior_order[t]
                    if masked[j]:
                        continue
                    _tile_components(j, 1, acc, dae_row, dae_map, title_row, title_map, lo, span, ok, x, nr, need)
                    _tile_values(p, raw, rows_of, w, n_parts, in_rows_of, in_w, in_parts, in_lo, in_span, in_ok,
                                 x, nr, v, 1)
                    if _clean(v[0]) > NEG:
                        continue
                    out[p, b, pos] = j
                    pos += 1
                if pos < k and bad[b] < 0:
                    bad[b] = b * n_pred + p
            for t in range(q_off[r], q_off[r + 1]):
                masked[q_val[t]] = False
    for b in range(b_rows):
        if bad[b] >= 0:
            return bad[b]
    return -1
