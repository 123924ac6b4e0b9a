"""Shared pieces of the frame-set ingests (yandex, fsd, speakers): summary, target check, sources."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from ..store.dictionary import IdListWriter
from ..store.errors import StoreError
from ..store.manifest import sha256_file


@dataclass
class FrameIngestSummary:
    """What a frame-set ingest wrote; ``lines()`` is what ``fstore ingest`` prints."""

    dataset: str
    files: int = 0
    raw_bytes: int = 0
    clips: dict = field(default_factory=dict)
    frames: dict = field(default_factory=dict)
    bins: int = 0
    bytes_on_disk: int = 0
    frame_bytes: int = 0
    seconds: float = 0.0
    notes: list = field(default_factory=list)

    @property
    def total_frames(self) -> int:
        return sum(self.frames.values())

    def finish(self, manifest: dict, t0: float) -> FrameIngestSummary:
        """Fill the counts and sizes from a written manifest; ``t0`` is the start time."""
        for name, t in manifest["tables"].items():
            if t["kind"] == "frames":
                self.clips[name], self.frames[name], self.bins = t["clips"], t["frames"], t["bins"]
        files = manifest["files"]
        self.bytes_on_disk = sum(f["bytes"] for f in files.values())
        self.frame_bytes = sum(f["bytes"] for n, f in files.items() if "/frames/c/" in n)
        self.seconds = time.perf_counter() - t0
        return self

    def lines(self) -> list[str]:
        n = max(self.total_frames, 1)
        f32 = 4 * self.bins
        per = self.bytes_on_disk / n
        return [
            f"files          {self.files} ({self.raw_bytes / 1e6:.1f} MB raw)",
            *[f"{k:<14} {self.clips[k]} clips, {self.frames[k]} frames" for k in self.clips],
            f"bins           {self.bins} per frame (float32: {f32} bytes/frame)",
            f"bytes on disk  {self.bytes_on_disk / 1e6:.2f} MB: {per:.1f} bytes/frame in all "
            f"({self.frame_bytes / n:.1f} in frame arrays), {f32 / max(per, 1e-9):.2f}x smaller than float32",
            f"seconds        {self.seconds:.2f} ({self.total_frames / max(self.seconds, 1e-9):,.0f} frames/s)",
            *[f"note           {x}" for x in self.notes],
        ]


def refuse_existing(store_path: str | Path, overwrite: bool) -> None:
    """Fail fast, before any reading, when the target exists (staged_directory checks again)."""
    if Path(store_path).exists() and not overwrite:
        raise StoreError(f"{store_path}: already exists (pass --overwrite to replace it)")


def source_entries(raw_dir: Path, meta_files: list[Path], feature_files: int, feature_bytes: int,
                   pattern: str) -> list[dict]:
    """Manifest sources: metadata files with sha256, feature files as one counted entry."""
    out = [{"path": str(p.relative_to(raw_dir)), "bytes": p.stat().st_size, "sha256": sha256_file(p)}
           for p in meta_files]
    out.append({"path": pattern, "files": feature_files, "bytes": feature_bytes})
    return out


def write_ids(stage: Path, name: str, ids: list[str]) -> None:
    """``ids/<name>.parquet``: the clip ids of one frame set, row number = clip index."""
    w = IdListWriter(stage / "ids" / f"{name}.parquet")
    w.append(pl.Series(ids, dtype=pl.Utf8))
    w.close()
