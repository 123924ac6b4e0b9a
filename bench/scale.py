"""``fstore bench scale FAMILY``: cost against size, at fractions of the real release (issue 21).

For each size it synthesizes the family's raw files in the real format, then ingests them, runs one loader
epoch (``fstore bench epoch``), trains with ``--max-minutes`` and evaluates the training run folder as a
user would (evaluate takes its ``best.pt``, which a time-limited run leaves, else ``checkpoint.pt``;
``scale.json`` records which). Per-family options go to the steps (Melon evaluates ``--split test``:
val, where the blend weights are chosen, then test). Every step is a subprocess of the real CLI (``python -m
featurestore.cli ...``), measured alone: wall time and peak RSS (``bench/memlimit.py``); with
``--memory-limit`` the steps named by ``--limit-steps`` run in a child memory cgroup with that limit
(the whole process: interpreter and torch included), and the table adds the cgroup's peak and OOM kills.

It prints a table (size, step, wall s, peak RSS MB), the exponent of time and of memory against size for
each step (least-squares slope in log-log: 1 is linear, 0 flat), and writes ``WORK/FAMILY/scale.json``
(every row, the exponents, store and cache bytes, evaluation scores) and ``WORK/FAMILY/scale.png``.
Each step's output is in ``WORK/FAMILY/logs/``. The data of a size is removed once measured (raw files
right after the ingest) unless ``--keep`` (``--keep-store``: all but the raw files). ``--resume`` keeps
the sizes an earlier ``scale.json`` measured whole; ``--markdown`` prints a result as a README table.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featurestore.store.atomic import atomic_write_bytes

from .memlimit import Measured, run_measured

STEPS = ("synth", "ingest", "epoch", "train", "evaluate")
FITTED = ("ingest", "epoch", "train", "evaluate")  # synth is set-up; its row is printed but not the point


@dataclass(frozen=True)
class Family:
    """How to run one family at ``n`` items (the unit its real size is counted in)."""

    name: str  # synth / ingest family
    model: str  # train / evaluate command
    unit: str
    real: int
    fractions: tuple[float, ...]  # default: what disk and time allow on a 2-core machine
    tiny: int
    synth: Callable[[int], list[str]]
    train: Callable[[int], list[str]] = field(default=lambda n: [])
    note: str = ""
    evaluate: tuple[str, ...] = ()  # extra options of its evaluate step


def _spotify(n: int) -> list[str]:
    # MSSD: 130M sessions over 3.7M tracks; logs gzip-compressed from 1M sessions on (30 GB of CSV at 10M)
    tracks = max(300, round(n * 3_700_000 / 130_000_000))
    return ["--sessions", str(n), "--tracks", str(tracks), *(["--gzip"] if n >= 1_000_000 else [])]


def _melon(n: int) -> list[str]:
    return ["--playlists", str(max(20, n)), "--songs", str(max(300, round(n * 707_989 / 148_826)))]


def _yandex_split(n: int) -> tuple[int, int, int]:
    train = max(20, round(n * 167_196 / 208_573))
    return train, max(4, round(train / (167_196 / 18_468))), max(1, n - train)


def _yandex(n: int) -> list[str]:
    train, artists, test = _yandex_split(n)
    return ["--tracks", str(train), "--artists", str(artists), "--test-tracks", str(test)]


def _yandex_train(n: int) -> list[str]:
    _, artists, _ = _yandex_split(n)
    # artist-balanced batches need that many artists with >= 2 tracks outside the 20 % held out
    return [] if artists * 0.8 >= 40 else ["--artists-per-batch", str(max(2, int(artists * 0.8) // 2))]


def _fsd(n: int) -> list[str]:
    curated = max(1, round(n * 4_970 / 24_785))
    return ["--curated", str(curated), "--noisy", str(max(0, n - curated)), "--test-clips", str(max(1, round(n / 10)))]


def _speakers_split(n: int) -> tuple[int, int]:
    speakers = max(2, round(n / (56_666 / 600)))
    return speakers, max(2, round(n / speakers))


def _speakers(n: int) -> list[str]:
    speakers, per = _speakers_split(n)
    return ["--speakers", str(speakers), "--utterances", str(per), "--test-utterances", str(round(n * 8_000 / 56_666))]


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("spotify", "skip", "sessions", 130_000_000, (0.0005, 0.002, 0.01, 0.077), 600, _spotify,
           note="sessions in all (train + test); tracks scaled as 3.7M / 130M"),
    Family("melon", "melon", "playlists", 148_826, (0.01, 0.1, 0.33, 1.0), 200, _melon,
           note="playlists over train/val/test; songs scaled as 707,989 / 148,826",
           evaluate=("--split", "test")),  # test is scored after val, where the blend weights are chosen
    Family("yandex", "yandex", "tracks", 208_573, (0.01, 0.033, 0.1, 0.33), 150, _yandex, _yandex_train,
           note="train + test tracks (167,196 + 41,377), 9.05 tracks an artist"),
    Family("fsd", "fsd", "clips", 24_785, (0.01, 0.05, 0.25, 1.0), 80, _fsd,
           note="curated + noisy clips (4,970 + 19,815), synth clips up to 4 s; test clips 10 % (not in DATASETS.md)"),
    Family("speakers", "speakers", "utterances", 56_666, (0.01, 0.1, 0.33, 1.0), 100, _speakers,
           note="labelled utterances, 94 a speaker; test utterances scaled as 8,000 / 56,666"),
)}


@dataclass
class Row:
    size: int
    fraction: float
    step: str
    status: str  # ok, exit N, timeout, oom, skipped
    wall_s: float = math.nan
    peak_rss_mb: float = math.nan
    cgroup_peak_mb: float | None = None
    limit_mb: float | None = None
    log: str = ""
    load: float | None = None  # the machine's 1-minute load average when the step ended (others' work too)

    @classmethod
    def from_json(cls, d: dict) -> Row:
        """A row of ``scale.json`` (where NaN was written as null)."""
        return cls(**{k: math.nan if v is None and k in ("wall_s", "peak_rss_mb") else v for k, v in d.items()})

    @classmethod
    def of(cls, size: int, fraction: float, step: str, m: Measured, log: Path) -> Row:
        status = ("oom" if m.oom_killed else "timeout" if m.timed_out else
                  "ok" if m.returncode == 0 else f"exit {m.returncode}")
        mb = 1 / 2**20
        return cls(size, fraction, step, status, m.wall_s, m.max_rss_bytes * mb,
                   None if m.peak_bytes is None else m.peak_bytes * mb,
                   None if m.limit_bytes is None else m.limit_bytes * mb, str(log), round(os.getloadavg()[0], 1))


def fit_exponents(rows: Sequence[Row], steps: Sequence[str] = FITTED) -> dict[str, dict[str, float | None]]:
    """Per step: the least-squares slope of log(wall s) and of log(peak RSS) against log(size), over the
    sizes where the step succeeded (None with fewer than two distinct sizes)."""
    out: dict[str, dict[str, float | None]] = {}
    for step in steps:
        ok = [r for r in rows if r.step == step and r.status == "ok"]
        x = np.log([r.size for r in ok]) if ok else np.empty(0)
        res: dict[str, float | None] = {"time": None, "memory": None}
        if np.unique(x).size >= 2:
            res["time"] = float(np.polyfit(x, np.log([max(r.wall_s, 1e-6) for r in ok]), 1)[0])
            res["memory"] = float(np.polyfit(x, np.log([max(r.peak_rss_mb, 1e-6) for r in ok]), 1)[0])
        out[step] = res
    return out


def table(rows: Sequence[Row], unit: str) -> list[str]:
    limited = any(r.limit_mb is not None for r in rows)
    head = f"  {unit:>12} {'fraction':>9}  {'step':<9}{'wall s':>9}{'peak RSS MB':>13}"
    head += f"{'cgroup MB':>11}{'limit MB':>10}" if limited else ""
    lines = [head + f"{'load':>6}  status"]
    for r in rows:
        line = f"  {r.size:>12,} {r.fraction:>9.4g}  {r.step:<9}{r.wall_s:>9.1f}{r.peak_rss_mb:>13,.0f}"
        if limited:
            cg = "" if r.cgroup_peak_mb is None else f"{r.cgroup_peak_mb:,.0f}"
            lim = "" if r.limit_mb is None else f"{r.limit_mb:,.0f}"
            line += f"{cg:>11}{lim:>10}"
        lines.append(line + f"{'' if r.load is None else f'{r.load:.1f}':>6}  {r.status}")
    return lines


def exponent_lines(exps: dict[str, dict[str, float | None]]) -> list[str]:
    def f(v: float | None) -> str:
        return "   n/a" if v is None else f"{v:6.2f}"
    return ["  exponent against size (log-log slope; 1 linear, 0 flat):"] + [
        f"    {step:<9} time {f(e['time'])}   peak RSS {f(e['memory'])}" for step, e in exps.items()]


def markdown(doc: dict) -> list[str]:
    """A ``scale.json`` as a Markdown table: one row per size, each step's wall seconds / peak RSS MB
    (or its status), the store's bytes, then the exponents."""
    steps = [s for s in STEPS if any(r["step"] == s for r in doc["rows"])]
    info = {i["size"]: i for i in doc["sizes"]}
    lines = [f"| {doc['unit']} | fraction | " + " | ".join(f"{s} s / MB" for s in steps) + " | store MB |",
             "|---:|---:|" + "---:|" * (len(steps) + 1)]
    for size in sorted({r["size"] for r in doc["rows"]}):
        cells = {r["step"]: (f"{r['wall_s']:,.0f} / {r['peak_rss_mb']:,.0f}" if r["status"] == "ok" else r["status"])
                 for r in doc["rows"] if r["size"] == size}
        store = info.get(size, {}).get("store_bytes")
        lines.append(f"| {size:,} | {size / doc['real_size']:.3g} | " + " | ".join(cells.get(s, "") for s in steps)
                     + f" | {'' if store is None else f'{store / 2**20:,.0f}'} |")

    def f(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f}"
    exps = doc["exponents"]
    lines.append("| exponent (time, RSS) | | " + " | ".join(
        f"{f(exps[s]['time'])}, {f(exps[s]['memory'])}" if s in exps else "" for s in steps) + " | |")
    return lines


def plot(rows: Sequence[Row], family: str, unit: str, path: Path) -> None:
    """Wall time and peak RSS against size, log-log, one line per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for step in STEPS:
        ok = sorted((r for r in rows if r.step == step and r.status == "ok"), key=lambda r: r.size)
        if not ok:
            continue
        sizes = [r.size for r in ok]
        axes[0].plot(sizes, [max(r.wall_s, 1e-3) for r in ok], "o-", label=step)
        axes[1].plot(sizes, [r.peak_rss_mb for r in ok], "o-", label=step)
    for ax, what in zip(axes, ("wall time (s)", "peak RSS (MB)"), strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # the decades only: minor labels overlap
        ax.set_xlabel(unit)
        ax.set_ylabel(what)
        ax.grid(True, which="both", alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(f"fstore bench scale {family}: cost against size")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _du(path: Path, skip: str | None = None) -> int:
    """Bytes of the files under ``path``, each file once: a store's versions share files by hard link."""
    total, seen = 0, set()
    for root, dirs, files in os.walk(path):
        if skip is not None and Path(root) == path and skip in dirs:
            dirs.remove(skip)
        for name in files:
            st = (Path(root) / name).lstat()
            if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def _checkpoint(run_dir: Path) -> Path:
    best = run_dir / "best.pt"
    return best if best.exists() else run_dir / "checkpoint.pt"


def _earlier(path: Path) -> dict[int, tuple[list[Row], dict]]:
    """Every size of an earlier ``scale.json``: size -> (rows, size info)."""
    if not path.is_file():
        return {}
    by_size: dict[int, list[Row]] = {}
    try:
        doc = json.loads(path.read_text())
        for r in doc["rows"]:
            row = Row.from_json(r)
            by_size.setdefault(row.size, []).append(row)
        info = {i["size"]: i for i in doc["sizes"]}
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a bench scale result to resume ({type(e).__name__}: {e})") from None
    return {n: (rs, info[n]) for n, rs in by_size.items() if n in info}


def _complete(rows: Sequence[Row], steps: Sequence[str]) -> bool:
    return all(any(r.step == s and r.status == "ok" for r in rows) for s in steps)


def plan(family: Family, n: int, folder: Path, max_minutes: float, epochs: int | None) -> dict[str, list[str]]:
    """The CLI command of each step at size ``n``."""
    cli = [sys.executable, "-m", "featurestore.cli"]
    raw, store, run = folder / "raw", folder / "store.fstore", folder / "run"
    train = [*cli, "train", family.model, str(store), str(run), "--max-minutes", f"{max_minutes:g}", "--no-resume",
             *family.train(n), *(["--epochs", str(epochs)] if epochs else [])]
    return {"synth": [*cli, "synth", family.name, str(raw), *family.synth(n), "--overwrite"],
            "ingest": [*cli, "ingest", family.name, str(raw), str(store), "--overwrite"],
            "epoch": [*cli, "bench", "epoch", str(store)],
            "train": train,
            # the training run folder, as a user passes it (evaluate takes its best.pt, else checkpoint.pt);
            # the submission gets its default name
            "evaluate": [*cli, "evaluate", family.model, str(store), str(run),
                         "--metrics-json", str(folder / "metrics.json"), *family.evaluate]}


def run(family_name: str, work: Path, fractions: Sequence[float] | None = None, sizes: Sequence[int] | None = None,
        max_minutes: float = 2.0, epochs: int | None = None, steps: Sequence[str] = STEPS,
        memory_limit: int | None = None, limit_steps: Sequence[str] = ("epoch",), step_timeout_s: float = 3600,
        keep: bool = False, keep_store: bool = False, resume: bool = False, dry_run: bool = False,
        echo: Callable[[str], None] = print) -> dict:
    """Measure ``family`` at each size (``sizes`` in its unit, else ``fractions`` of the real release);
    return the JSON document written to ``work/family/scale.json``. ``keep`` keeps every size's data;
    ``keep_store`` only its store and training run (the raw files, the largest part, are removed after
    the ingest), e.g. to evaluate the largest size again. ``resume`` keeps the sizes of an earlier
    ``scale.json`` whose steps (those asked for now) all succeeded, runs the others, and writes them all
    into one table (a sweep stopped part way, or more sizes added later)."""
    family = FAMILIES[family_name]
    bad = [s for s in [*steps, *limit_steps] if s not in STEPS]
    if bad:
        raise ValueError(f"unknown step {bad[0]!r}; steps are {', '.join(STEPS)}")
    if sizes:
        points = [(int(n), n / family.real) for n in sizes]
    else:
        points = [(max(1, round(f * family.real)), float(f)) for f in (fractions or family.fractions)]
    out = work / family.name
    logs = out / "logs"
    echo(f"bench scale {family.name}: {family.unit} {', '.join(f'{n:,}' for n, _ in points)} "
         f"(real release {family.real:,}: {family.note}); train --max-minutes {max_minutes:g}"
         + (f"; {', '.join(limit_steps)} under a {memory_limit / 2**20:,.0f} MB memory limit" if memory_limit else ""))
    if dry_run:
        for n, frac in points:
            folder = out / f"n{n}"
            echo(f"  {family.unit} {n:,} (fraction {frac:.4g}):")
            for step, cmd in plan(family, n, folder, max_minutes, epochs).items():
                if step in steps:
                    echo(f"    {step:<9}{' '.join(cmd[1:])}")
        return {}
    logs.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    sizes_info: list[dict] = []
    done = _earlier(out / "scale.json") if resume else {}

    def save(current: dict | None) -> dict:
        """scale.json as measured so far (after every step: a sweep stopped part way keeps its rows, and
        ``--resume`` takes it up); earlier sizes not asked for this time stay in it."""
        every = rows + [r for kept, _ in done.values() for r in kept]
        every.sort(key=lambda r: (r.size, STEPS.index(r.step)))
        infos = sorted(sizes_info + ([current] if current else []) + [i for _, i in done.values()],
                       key=lambda i: i["size"])
        doc = {"family": family.name, "unit": family.unit, "real_size": family.real, "note": family.note,
               "max_minutes": max_minutes, "memory_limit_bytes": memory_limit, "limit_steps": list(limit_steps),
               "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "cpus": os.cpu_count(),
               "rows": [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.__dict__.items()}
                        for r in every], "exponents": fit_exponents(every), "sizes": infos}
        atomic_write_bytes(out / "scale.json", (json.dumps(doc, indent=1) + "\n").encode())
        return doc
    for n, frac in points:
        kept_rows, kept_info = done.pop(n, ([], {}))
        if kept_rows and _complete(kept_rows, steps):
            rows += kept_rows
            sizes_info.append(kept_info)
            echo(f"  {family.unit} {n:,}: kept from the earlier scale.json (--resume)")
            continue
        folder = out / f"n{n}"
        folder.mkdir(parents=True, exist_ok=True)
        cmds = plan(family, n, folder, max_minutes, epochs)
        info: dict = {"size": n, "fraction": frac}
        failed = False
        for step in STEPS:
            if step not in steps:
                continue
            if failed:
                rows.append(Row(n, frac, step, "skipped"))
                continue
            cmd = cmds[step]
            if step == "evaluate":
                info["checkpoint"] = _checkpoint(folder / "run").name
            log = logs / f"n{n}-{step}.log"
            limit = memory_limit if step in limit_steps else None
            with open(log, "w") as f:
                f.write(" ".join(cmd) + "\n")
                f.flush()
                m = run_measured(cmd, limit_bytes=limit, stdout=f, stderr=subprocess.STDOUT, cwd=folder,
                                 timeout=step_timeout_s)
            row = Row.of(n, frac, step, m, log)
            rows.append(row)
            failed = row.status != "ok"
            if step == "synth" and row.status == "ok":
                info["raw_bytes"] = _du(folder / "raw")
            if step == "ingest" and row.status == "ok":
                info["store_bytes"] = _du(folder / "store.fstore", skip="cache")
                if not keep:
                    shutil.rmtree(folder / "raw", ignore_errors=True)
            if step == "epoch" and row.status == "ok":
                info["cache_bytes"] = _du(folder / "store.fstore" / "cache")
                info["epoch"] = [ln for ln in log.read_text().splitlines() if ln.startswith("epoch:")][-1:]
            if step == "evaluate" and (folder / "metrics.json").exists():
                info["scores"] = json.loads((folder / "metrics.json").read_text())
            save(info)
            echo(table([row], family.unit)[1] + f"   ({log.name})")
        sizes_info.append(info)
        if not (keep or keep_store):
            shutil.rmtree(folder, ignore_errors=True)
    doc = save(None)
    rows = [Row.from_json(r) for r in doc["rows"]]
    echo(f"bench scale {family.name}:")
    for line in table(rows, family.unit) + exponent_lines(doc["exponents"]):
        echo(line)
    plot(rows, family.name, family.unit, out / "scale.png")
    echo(f"wrote {out / 'scale.json'} and {out / 'scale.png'}; step logs in {logs}")
    return doc
