"""The MSSD session logs' encoding, shared by the serial ingest (``spotify``), its append
(``spotify_append``) and the Dask tasks (``distributed``): one definition, so every path stores the
same codes.

- ``SessionEncoder``: validated log frames -> the stored event columns; owns the categorical vocabularies.
- ``read_test_date``: one test date's prehistory and second half (ground truth, else the input log with
  the log columns zero), checked and merged session by session; ``check_test_labels``: all test dates
  labelled, or none.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl

from ..schemas import mssd as S
from ..store import Dictionary, InputError
from . import log_batches
from .log_batches import LinesFrom, session_batches
from .sessions import FIRST_HALF, SECOND_HALF, Runs, session_runs
from .table import read_typed_csv


class TrackIndex:
    """Track id -> code, for one batch of log rows at a time, without rebuilding anything per batch.

    A polars join against the track table builds a hash table over one side for every call: per batch of
    140K rows against 1M tracks that cost more than the rest of the batch's encoding. Here the ids' 64-bit
    hashes are sorted once, and a table of where each run of equal top bits starts in them (2-4 int32
    a track: 8-16 bytes beside the 12 of the sorted hashes) finds a hash in one or two probes: a
    binary search (``np.searchsorted``) over 1M hashes took 4x as long, ~20 dependent cache misses a
    row. Every match is confirmed by comparing the id strings, so a hash shared with an unknown id
    cannot pass. Two tracks with one hash (never seen; possible in principle) use the join.
    """

    def __init__(self, track_codes: pl.DataFrame):
        self.ids = track_codes[S.TRACK_ID]
        self.table = track_codes
        h = self.ids.hash(seed=0).to_numpy()
        self.order = np.argsort(h).astype(np.int32)
        self.hashes = h[self.order]
        self.code = track_codes["code"].to_numpy().astype(np.int32)
        self.unique = not np.any(self.hashes[1:] == self.hashes[:-1])
        bits = max(1, len(h)).bit_length() + 1  # top-bit values: 2-4 per track, so most runs hold 0 or 1 hash
        self.shift = np.uint64(64 - bits)
        self.start = np.searchsorted(self.hashes >> self.shift,
                                     np.arange((1 << bits) + 1, dtype=np.uint64)).astype(np.int32)

    def _find(self, q: np.ndarray) -> np.ndarray:
        """Position of each hash of ``q`` in ``self.hashes``, -1 where absent: probe the run of its top
        bits from its start, the rows not yet found one step further each round."""
        top = q >> self.shift
        pos, end = self.start[top], self.start[top + 1]
        found = (pos < end) & (self.hashes[np.minimum(pos, len(self.hashes) - 1)] == q)
        out = np.where(found, pos, -1)
        rest = np.flatnonzero(~found)
        pos, end, q = pos[rest] + 1, end[rest], q[rest]
        while rest.size:
            live = pos < end
            rest, pos, end, q = rest[live], pos[live], end[live], q[live]
            hit = self.hashes[pos] == q
            out[rest[hit]] = pos[hit]
            rest, pos, end, q = rest[~hit], pos[~hit] + 1, end[~hit], q[~hit]
        return out

    def codes(self, track_ids: pl.Series) -> np.ndarray:
        """int32 code of each id, -1 where the id is not a track."""
        if not self.unique or not len(self.hashes):
            codes = track_ids.to_frame("t").join(self.table, left_on="t", right_on=S.TRACK_ID, how="left",
                                                 maintain_order="left")["code"]
            return codes.fill_null(-1).to_numpy().astype(np.int32)
        pos = self._find(track_ids.hash(seed=0).to_numpy())
        row = self.order[np.maximum(pos, 0)]
        found = (pos >= 0) & (self.ids.gather(row) == track_ids).to_numpy()
        return np.where(found, self.code[row], np.int32(-1)).astype(np.int32)


class SessionEncoder:
    """Turns validated log frames into stored event columns; owns the categorical vocabularies."""

    def __init__(self, track_codes: pl.DataFrame | None):
        self.track_codes = track_codes  # None until the track table is written
        self._index: TrackIndex | None = None
        self._index_of: pl.DataFrame | None = None
        self.dicts = {c: Dictionary() for c in S.CATEGORICAL_COLUMNS}

    def columns(self, df: pl.DataFrame, path: Path, line_of_row: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The stored event columns of ``df``. ``line_of_row``: the file line of each row, for errors
        (None: row r is line r + 2, under the header). No copy where a dtype is already the stored one."""
        def line(r: int) -> int:
            return int(line_of_row[r]) if line_of_row is not None else r + 2

        track = self._track_index().codes(df["track_id_clean"])
        if track.min(initial=0) < 0:
            r = int(np.argmax(track < 0))
            raise InputError(path, f"track {df['track_id_clean'][r]!r} is not in track_features",
                             line=line(r), column="track_id_clean")
        out = {"track": track}
        for c in S.BOOL_COLUMNS:
            out[c] = df[c].to_numpy().view(np.uint8)  # numpy bools are bytes 0/1
        for c, limit in [*((f, 1) for f in S.FLAG_COLUMNS), ("hour_of_day", 23)]:
            v = df[c].to_numpy()
            bad = np.flatnonzero(v > limit)
            if bad.size:
                raise InputError(path, f"value {v[bad[0]]} outside 0..{limit}", line=line(int(bad[0])), column=c)
            out[c] = v.astype(np.uint8, copy=False)
        for c in S.COUNT_COLUMNS:
            out[c] = df[c].to_numpy().astype(np.uint16, copy=False)
        out["date"] = df["date"].cast(pl.Int32).to_numpy()
        for c in S.CATEGORICAL_COLUMNS:
            if isinstance(df[c].dtype, pl.Enum):  # parsed against the vocabulary (+ known values): codes
                codes = df[c].to_physical()
                out[c] = self.dicts[c].encode_categories(codes.to_numpy(), df[c].dtype.categories.to_list(),
                                                         codes.unique(maintain_order=True).to_numpy())
            else:
                out[c] = self.dicts[c].encode_series(df[c], pl.UInt16).to_numpy()
            if len(self.dicts[c]) > 256:
                raise InputError(path, f"more than 256 distinct values in {c} (stored as uint8 codes)", column=c)
            out[c] = out[c].astype(np.uint8)
        return out

    def _track_index(self) -> TrackIndex:
        if self._index is None or self._index_of is not self.track_codes:
            self._index, self._index_of = TrackIndex(self.track_codes), self.track_codes
        return self._index

    def vocabularies(self) -> dict[str, list[str]]:
        return {c: d.values for c, d in self.dicts.items()}


def _second_half(inp: Path, gt: Path | None, digests: dict | None = None) -> tuple[pl.DataFrame, Path]:
    digests = digests or {}
    if gt is not None:  # text categoricals: merged with prehistory below
        return read_typed_csv(gt, S.LOG_CSV, digest=digests.get(gt)), gt
    return _with_zero_logs(read_typed_csv(inp, S.INPUT_CSV, digest=digests.get(inp))), inp


def _with_zero_logs(df: pl.DataFrame) -> pl.DataFrame:
    """An input log's rows (ids and positions only) with the log columns zero, as the stored second half."""
    zeros = {c: pl.lit(0, dtype=t) for c, t in S.LOG_CSV.items() if c not in S.INPUT_CSV}
    for c in (*S.BOOL_COLUMNS,):
        zeros[c] = pl.lit(False)
    for c in S.CATEGORICAL_COLUMNS:
        zeros[c] = pl.lit("", dtype=pl.Utf8)  # unknown: the empty string is its own vocabulary entry
    zeros["date"] = pl.lit(0).cast(pl.Date)
    return df.with_columns(**zeros).select(list(S.LOG_CSV))


def _merge_halves(pre: pl.DataFrame, pre_runs: Runs, post: pl.DataFrame, post_runs: Runs,
                  pre_path: Path, post_path: Path, pre_lines: np.ndarray | None = None,
                  post_lines: np.ndarray | None = None) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
    """Interleave first and second halves session by session, in prehistory order. ``pre_lines`` and
    ``post_lines``: each row's file line (None: row r is line r + 2)."""
    post_index = pl.DataFrame({"sid": post_runs.session_ids, "run": np.arange(len(post_runs.lengths))})
    joined = pl.DataFrame({"sid": pre_runs.session_ids}).join(post_index, on="sid", how="left", maintain_order="left")
    if joined["run"].null_count():
        r = int(joined["run"].is_null().arg_max())
        raise InputError(post_path, f"session {pre_runs.session_ids[r]!r} of {pre_path.name} has no second half here")
    if len(post_runs.lengths) != len(pre_runs.lengths):
        raise InputError(post_path, f"{len(post_runs.lengths)} sessions, but {pre_path.name} has {len(pre_runs.lengths)}")
    match = joined["run"].to_numpy()
    lengths = pre_runs.lengths + post_runs.lengths[match]
    # row index into concat([pre, post]) for every event of the merged sessions
    src_start = np.stack([pre_runs.starts, pre.height + post_runs.starts[match]], 1).ravel()
    src_len = np.stack([pre_runs.lengths, post_runs.lengths[match]], 1).ravel()
    rows = np.repeat(src_start - np.concatenate([[0], np.cumsum(src_len)[:-1]]), src_len) + np.arange(src_len.sum())
    merged = pl.concat([pre, post]).select(list(S.LOG_CSV))[rows]
    if pre_lines is None and post_lines is None:
        lines = np.where(rows < pre.height, rows + 2, rows - pre.height + 2)
    else:
        lines = np.concatenate([pre_lines, post_lines])[rows]
    return merged, lengths, lines


def check_test_labels(triples) -> bool:
    """Whether the test dates come with ``ground_truth_*`` files: all of them, or none."""
    labelled = [gt is not None for _, _, gt in triples]
    if any(labelled) and not all(labelled):
        raise InputError(triples[0][0].parent, "ground_truth_* files exist for some test dates but not all")
    return bool(labelled and all(labelled))


def read_test_date(pre_path: Path, inp: Path, gt: Path | None,
                   digests: dict | None = None) -> tuple[pl.DataFrame, np.ndarray, np.ndarray, pl.Series]:
    """One test date, checked: (merged rows, session lengths, source line of each row, session ids).
    ``digests``: path -> ``HashAside`` fed by the parse (a distributed task hashes as it reads)."""
    pre = read_typed_csv(pre_path, S.LOG_CSV, digest=(digests or {}).get(pre_path))
    pre_runs = session_runs(pre, pre_path, FIRST_HALF)
    post, post_path = _second_half(inp, gt, digests)
    post_runs = session_runs(post, post_path, SECOND_HALF)
    merged, lengths, lines = _merge_halves(pre, pre_runs, post, post_runs, pre_path, post_path)
    return merged, lengths, lines, pre_runs.session_ids


class _SecondHalves:
    """The second-half file of a test date read batch by batch: sessions read but not yet merged are
    kept (``pending``) until their prehistory comes. When both files list sessions in the same order,
    as MSSD's do, that is at most a batch; any other order is still merged correctly, holding more."""

    def __init__(self, inp: Path, gt: Path | None, block_bytes: int | None):
        self.path = gt if gt is not None else inp
        schema = S.LOG_CSV if gt is not None else S.INPUT_CSV
        self._stream = session_batches(self.path, lambda: schema, block_bytes)
        self._fill = gt is None
        self.frame = pl.DataFrame(schema={**S.LOG_CSV, "_line": pl.Int64})
        self.starts = self.lengths = np.zeros(0, dtype=np.int64)
        self.ids = pl.Series("sid", [], dtype=pl.Utf8)
        self.done = False
        self.taken = 0  # sessions merged so far

    def pull(self) -> bool:
        """Read the next batch into ``pending``; False at the end of the file."""
        batch = next(self._stream, None)
        if batch is None:
            self.done = True
            return False
        with LinesFrom(self.path, batch.first_line):
            runs = session_runs(batch.frame, self.path, SECOND_HALF)
        df = _with_zero_logs(batch.frame) if self._fill else batch.frame.select(list(S.LOG_CSV))
        df = df.with_columns(_line=pl.int_range(batch.first_line, batch.first_line + df.height, dtype=pl.Int64))
        self.starts = np.concatenate([self.starts, runs.starts + self.frame.height])
        self.lengths = np.concatenate([self.lengths, runs.lengths])
        self.ids = pl.concat([self.ids, runs.session_ids.rename("sid")])
        self.frame = pl.concat([self.frame, df], how="vertical_relaxed")
        return True

    def take(self, runs: np.ndarray) -> tuple[pl.DataFrame, Runs, np.ndarray]:
        """The pending sessions ``runs`` (run numbers), in that order, removed from ``pending``:
        (rows, their Runs, their file lines)."""
        def rows_of(k: np.ndarray) -> np.ndarray:
            n = self.lengths[k]
            return np.repeat(self.starts[k] - (np.cumsum(n) - n), n) + np.arange(n.sum())

        taken = self.frame[rows_of(runs)]
        lengths = self.lengths[runs]
        out = Runs(starts=np.cumsum(lengths) - lengths, lengths=lengths,
                   session_ids=self.ids.gather(runs), session_length=np.zeros(0, dtype=np.int64))
        keep = np.setdiff1d(np.arange(len(self.lengths)), runs)
        self.frame, self.ids = self.frame[rows_of(keep)], self.ids.gather(keep)
        self.lengths = self.lengths[keep]
        self.starts = np.cumsum(self.lengths) - self.lengths
        self.taken += len(runs)
        return taken.drop("_line"), out, taken["_line"].to_numpy()

    def count_all(self) -> int:
        """Every session of the file (reads the rest of it): for the error when the counts differ."""
        while self.pull():
            pass
        return self.taken + len(self.lengths)


def test_date_batches(pre_path: Path, inp: Path, gt: Path | None, block_bytes: int | None = None
                      ) -> Iterator[tuple[pl.DataFrame, np.ndarray, np.ndarray, pl.Series]]:
    """``read_test_date``'s answer in batches of whole sessions, bounded in memory: the same rows, lengths,
    lines and ids in the same order, and the same errors, whatever the batch size. Blocks are a quarter
    of the train logs' (``block_bytes`` None): a test batch is held as text columns in four copies
    (two halves, the pending second halves, the merge), and took 2x the train phase's peak RSS at 24 MB."""
    block_bytes = block_bytes or max(log_batches.BLOCK_BYTES // 4, 1)
    post = _SecondHalves(inp, gt, block_bytes)
    sessions = 0
    for batch in session_batches(pre_path, lambda: S.LOG_CSV, block_bytes):
        with LinesFrom(pre_path, batch.first_line):
            pre_runs = session_runs(batch.frame, pre_path, FIRST_HALF)
        sessions += len(pre_runs.lengths)
        wanted = pl.DataFrame({"sid": pre_runs.session_ids})
        while True:
            index = pl.DataFrame({"sid": post.ids, "run": np.arange(len(post.lengths))}).unique("sid", keep="first")
            joined = wanted.join(index, on="sid", how="left", maintain_order="left")["run"]
            if not joined.null_count() or not post.pull():
                break
        if joined.null_count():
            r = int(joined.is_null().arg_max())
            raise InputError(post.path, f"session {pre_runs.session_ids[r]!r} of {pre_path.name} has no second half here")
        second, second_runs, second_lines = post.take(joined.to_numpy())
        pre_lines = batch.first_line + np.arange(batch.frame.height)
        merged, lengths, lines = _merge_halves(batch.frame, pre_runs, second, second_runs, pre_path, post.path,
                                               pre_lines, second_lines)
        yield merged, lengths, lines, pre_runs.session_ids
    if len(post.lengths) or not post.done:
        total = post.count_all()
        if total != sessions:
            raise InputError(post.path, f"{total} sessions, but {pre_path.name} has {sessions}")
