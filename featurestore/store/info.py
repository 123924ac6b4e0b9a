"""Human-readable description of a store for ``fstore info``."""

from __future__ import annotations

from collections import defaultdict

from .store import Store

ERROR_LEGEND = [
    "errors: max|err| is the largest error over values inside each quantizer's fitted range, where the bound",
    "  is guaranteed (max|err| <= bound); rmse is over all values; clipped values lay outside the fitted range",
    "  and were stored as the nearest end level: their count and largest error are shown on their own",
]


def describe(store: Store) -> list[str]:
    m = store.manifest
    total = store.bytes_on_disk()
    by_table: dict[str, int] = defaultdict(int)
    for name, f in m["files"].items():
        by_table[name.split("/", 1)[0]] += f["bytes"]
    lines = [f"{store.path}: fstore schema v{m['schema_version']}, dataset {m['dataset']}, "
             f"{total / 1e6:.2f} MB on disk, {len(m['sources'])} source files"]
    for name, t in store.tables.items():
        size = by_table.get(name, 0)
        if t["kind"] == "feature_table":
            lines.append(f"table {name}: feature table, {t['rows']} rows x {len(t['columns'])} columns, "
                         f"{size / 1e6:.2f} MB ({size / max(t['rows'], 1):.1f} bytes/row)")
            lines.append(f"  {'column':<28}{'quantizer':<20}{'max|err|':>10}{'bound':>10}{'rmse':>10}{'nan':>6}"
                         f"{'clipped':>9}{'its max|err|':>14}")
            for c in t["columns"]:
                clipped = c.get("clipped", 0)
                lines.append(f"  {c['name']:<28}{c['codec']['id']:<20}{c['max_abs_error']:>10.4g}{c['bound']:>10.4g}"
                             f"{c['rmse']:>10.4g}{c['nan']:>6}{clipped:>9}"
                             f"{c.get('clipped_max_abs_error', 0.0) if clipped else 0.0:>14.4g}")
        elif t["kind"] == "ragged":
            lines.append(f"table {name}: ragged, {t['rows']} rows, {t['events']} events, {size / 1e6:.2f} MB "
                         f"({size / max(t['events'], 1):.2f} bytes/event)"
                         + "".join(f", {k}={v}" for k, v in t.items() if k in ("split", "second_half_labels")))
            for c, cm in t["columns"].items():
                extra = ", ".join(f"{k}={v}" for k, v in cm.items() if k != "dtype")
                lines.append(f"  {c:<34}{cm['dtype']:<8}{extra}")
        elif t["kind"] == "frames":
            lines += _describe_frames(name, t, size)
        else:
            lines.append(f"table {name}: {t['kind']}, {t.get('rows')} rows")
    if any(t["kind"] in ("feature_table", "frames") for t in store.tables.values()):
        lines += ERROR_LEGEND
    dicts = sorted(p.stem for p in (store.path / "dicts").glob("*.parquet"))
    for d in dicts:
        v = store.dictionary(d).values
        lines.append(f"dictionary {d}: {len(v)} values ({', '.join(v[:8])}{', ...' if len(v) > 8 else ''})")
    return lines


def _describe_frames(name: str, t: dict, size: int) -> list[str]:
    """A frame set: clips, frames, bins, bytes/frame vs float32, per-bin error min/median/max."""
    frames, bins = t["frames"], t["bins"]
    per = size / max(frames, 1)
    out = [f"table {name}: frames, {t['clips']} clips, {frames} frames x {bins} bins, {size / 1e6:.2f} MB "
           f"({per:.1f} bytes/frame, float32 {4 * bins}: {4 * bins / max(per, 1e-9):.2f}x smaller)"]
    extra = [f"{c} ({cm['dtype']}{', ' + cm['dictionary'] if 'dictionary' in cm else ''})"
             for c, cm in t.get("clip_columns", {}).items()]
    if "labels" in t:
        extra.append(f"labels (multi-label CSR, {t['labels'].get('dictionary')})")
    if extra:
        out.append(f"  per clip: {', '.join(extra)}")
    qs = t.get("quantizers", [])
    kinds = sorted({q["codec"]["id"] for q in qs})
    out.append(f"  {'per-bin':<28}{'min':>12}{'median':>12}{'max':>12}   quantizers: {', '.join(kinds)}")
    for key, label in (("max_abs_error", "max|err|"), ("rmse", "rmse"), ("bound", "bound")):
        v = sorted(q[key] for q in qs) or [0.0]
        out.append(f"  {label:<28}{v[0]:>12.4g}{v[len(v) // 2]:>12.4g}{v[-1]:>12.4g}")
    clipped = sum(q.get("clipped", 0) for q in qs)
    clipped_err = max((q.get("clipped_max_abs_error", 0.0) for q in qs if q.get("clipped", 0)), default=0.0)
    nan = sum(q.get("nan", 0) for q in qs)
    fit = (f"quantizers of {t['quantizers_from']}" if t.get("quantizers_from")
           else f"quantizers fitted on {t.get('sample_frames')} frames")
    fit += " + exact range" if t.get("exact_range") else ""
    out.append(f"  {fit}; {nan} NaN; {clipped} values clipped"
               + (f" (largest error among them {clipped_err:.4g})" if clipped else ""))
    return out
