"""The versioned store on S3, against a local moto server started by this test module (never a cloud)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from featurestore.cli import main
from featurestore.ingest.builder import StoreBuilder
from featurestore.ingest.spotify import ingest_spotify
from featurestore.ingest.spotify_append import append_spotify
from featurestore.store import Store, StoreError
from featurestore.store.remote import S3Store
from featurestore.synth.spotify import synth_spotify
from loaders import SessionBatches

BUCKET = "fstore-test"


@pytest.fixture(scope="module")
def s3_server():
    from bench.remote import moto_s3

    with moto_s3(BUCKET) as env:
        yield env


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> tuple[Path, Path]:
    full = tmp_path_factory.mktemp("s3raw")
    synth_spotify(full, sessions=360, tracks=140, seed=21, train_files=2)
    a, b = full.parent / "s3A", full.parent / "s3B"
    shutil.copytree(full, a)
    last = sorted((a / "training_set").iterdir())[-1]
    (b / "training_set").mkdir(parents=True)
    shutil.move(last, b / "training_set" / last.name)
    return a, b


def _batches(store, **kw) -> list[dict]:
    return [{k: v.clone() for k, v in x.items()} for x in SessionBatches(store, batch_size=50, order="random",
                                                                          seed=1, threads=1, **kw)]


def test_s3_round_trip_ingest_append_versions_loaders(s3_server, parts, tmp_path, monkeypatch):
    monkeypatch.setenv("FSTORE_CACHE", str(tmp_path / "cache"))
    a, b = parts
    url = f"s3://{BUCKET}/round"
    r = CliRunner()
    out = r.invoke(main, ["ingest", "spotify", str(a), url])
    assert out.exit_code == 0, out.output
    again = r.invoke(main, ["ingest", "spotify", str(a), url])
    assert again.exit_code == 1 and "already exists" in again.output
    out = r.invoke(main, ["ingest", "spotify", str(b), url, "--append"])
    assert out.exit_code == 0, out.output
    lines = r.invoke(main, ["versions", url]).output.splitlines()
    assert len(lines) == 3 and "ingest" in lines[1] and "append" in lines[2]
    assert r.invoke(main, ["validate", url]).exit_code == 0
    assert r.invoke(main, ["validate", url, "--version", "1"]).exit_code == 0
    info = r.invoke(main, ["info", url, "--version", "1"])
    assert info.exit_code == 0 and "version 1" in info.output
    # the same commits on local disk give the same batches
    local = tmp_path / "local.fstore"
    ingest_spotify(a, local, progress=False)
    append_spotify(b, local, progress=False)
    remote_batches = _batches(url)
    local_batches = _batches(local)
    assert len(remote_batches) == len(local_batches)
    assert all(torch.equal(x[k], y[k]) for x, y in zip(remote_batches, local_batches, strict=True) for k in x)
    v1 = Store(url, version=1)
    assert v1.ragged("train").rows == Store(local, version=1).ragged("train").rows


def test_s3_objects_are_downloaded_once_and_the_cache_is_bounded(s3_server, parts, tmp_path):
    a, b = parts
    url = f"s3://{BUCKET}/cache"
    ingest_spotify(a, url, progress=False)
    append_spotify(b, url, progress=False)
    remote = S3Store(url)
    cache = tmp_path / "c"
    first = Store(url, cache_dir=cache)
    objects = next(cache.iterdir()) / "objects"
    stamps = {p.name: p.stat().st_ino for p in objects.iterdir()}
    Store(url, cache_dir=cache)
    assert {p.name: p.stat().st_ino for p in objects.iterdir()} == stamps  # nothing downloaded again
    assert first.validate() == []
    # the append uploaded only what changed: objects of both versions together are fewer than both file lists
    e1, e2 = remote.read_entry(1), remote.read_entry(2)
    shared = {f["sha256"] for f in e1["files"].values()} & {f["sha256"] for f in e2["files"].values()}
    assert shared and len(remote.object_keys()) == len({f["sha256"] for e in (e1, e2) for f in e["files"].values()})
    # bounded: opening version 1 with a small limit evicts version 2's objects it does not need
    need = sum(f["bytes"] for f in {f["sha256"]: f for f in e1["files"].values()}.values())
    Store(url, version=1, cache_dir=cache, cache_limit=need)
    held = sum(p.stat().st_size for p in objects.iterdir() if not p.name.startswith("."))
    assert held <= need
    assert Store(url, cache_dir=cache).validate() == []  # version 2 comes back (downloaded again)


def test_s3_two_writers_one_wins_and_vacuum(s3_server, parts, tmp_path):
    a, _ = parts
    url = f"s3://{BUCKET}/race"
    w1 = StoreBuilder(url, "x", progress=False).__enter__()
    w2 = StoreBuilder(url, "x", progress=False).__enter__()
    for w in (w1, w2):
        w.finish([])
    w1.__exit__(None, None, None)
    with pytest.raises(StoreError, match="already exists: another ingest created it first"):
        w2.__exit__(None, None, None)
    ingest_spotify(a, url, overwrite=True, progress=False)
    r = CliRunner().invoke(main, ["vacuum", url, "--keep", "1", "--grace-hours", "0"])
    assert r.exit_code == 0 and "expired version 1" in r.output, r.output
    assert S3Store(url).version_numbers() == [2]
    assert Store(url, cache_dir=tmp_path / "c").validate() == []


def test_s3_tags(s3_server, parts, tmp_path, monkeypatch):
    monkeypatch.setenv("FSTORE_CACHE", str(tmp_path / "cache"))
    a, b = parts
    url = f"s3://{BUCKET}/tags"
    ingest_spotify(a, url, progress=False)
    r = CliRunner()
    out = r.invoke(main, ["tag", url, "first"])
    assert out.exit_code == 0 and "tag first -> version 1" in out.output, out.output
    append_spotify(b, url, progress=False)
    again = r.invoke(main, ["tag", url, "first"])
    assert again.exit_code == 1 and "already names version 1" in again.output
    assert len(again.output.strip().splitlines()) == 1
    assert r.invoke(main, ["tag", url, "12"]).exit_code == 1  # a number is no tag name
    assert r.invoke(main, ["tag", url, "latest", "--version", "2"]).exit_code == 0
    assert S3Store(url).tags() == {"first": 1, "latest": 2}
    tagged = Store(url, version="first")
    assert tagged.version == 1 and tagged.ragged("train").rows == Store(url, version=1).ragged("train").rows
    lines = r.invoke(main, ["versions", url]).output.splitlines()
    assert "tags: first" in lines[1] and "tags: latest" in lines[2]
    missing = r.invoke(main, ["info", url, "--version", "nope"])
    assert missing.exit_code == 1 and "no tag 'nope'" in missing.output
    # vacuum never expires a tagged version
    out = r.invoke(main, ["vacuum", url, "--keep", "1", "--grace-hours", "0"])
    assert out.exit_code == 0 and S3Store(url).version_numbers() == [1, 2], out.output
    assert Store(url, version="first").validate() == []


def _objects(cache: Path) -> dict[str, int]:
    return {p.name: p.stat().st_ino for p in cache.glob("*/objects/*") if not p.name.startswith(".")}


def _held(cache: Path) -> int:
    return sum(p.stat().st_size for p in cache.glob("*/objects/*") if not p.name.startswith("."))


def test_loaders_cache_limit_on_s3(s3_server, parts, tmp_path, monkeypatch):
    """SessionBatches(cache_limit=): the objects kept stay within it, and what it holds is not downloaded again."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("FSTORE_CACHE", str(cache))
    a, b = parts
    url = f"s3://{BUCKET}/limit"
    ingest_spotify(a, url, progress=False)
    append_spotify(b, url, progress=False)
    remote = S3Store(url)
    sizes = [{f["sha256"]: f["bytes"] for f in remote.read_entry(n)["files"].values()} for n in (1, 2)]
    union = sum({**sizes[0], **sizes[1]}.values())
    limit = max(sum(s.values()) for s in sizes)
    assert union > limit  # both versions do not fit together: opening one must evict the other's parts
    local = tmp_path / "local.fstore"
    ingest_spotify(a, local, progress=False)
    append_spotify(b, local, progress=False)
    got = _batches(url, cache_limit=limit)
    assert _held(cache) <= limit
    stamps = _objects(cache)
    assert sum(x["session"].numel() for x in got) == Store(local).ragged("train").rows
    again = _batches(url, cache_limit=limit)
    assert _objects(cache) == stamps  # nothing downloaded twice while it fits
    assert all(torch.equal(x[k], y[k]) for x, y in zip(got, again, strict=True) for k in x)
    assert all(torch.equal(x[k], y[k]) for x, y in zip(got, _batches(local), strict=True) for k in x)
    v1 = _batches(url, version=1, cache_limit=limit)
    assert _held(cache) <= limit and set(_objects(cache)) != set(stamps)  # version 2's own parts evicted
    assert len(v1) == len(_batches(local, version=1))
    with pytest.raises(StoreError, match="more than cache_limit"):
        SessionBatches(url, cache_limit=limit // 4)
    with pytest.raises(ValueError, match="cache_limit must be"):
        SessionBatches(url, cache_limit=-1)


def test_segment_loader_cache_limit_on_s3(s3_server, tmp_path, monkeypatch):
    from featurestore.ingest.yandex import ingest_yandex
    from featurestore.synth.yandex import synth_yandex
    from loaders import SegmentBatches

    cache = tmp_path / "cache"
    monkeypatch.setenv("FSTORE_CACHE", str(cache))
    raw = tmp_path / "y"
    synth_yandex(raw, tracks=24, artists=4, test_tracks=3, seed=2)
    url = f"s3://{BUCKET}/frames"
    ingest_yandex(raw, url, progress=False)
    need = sum({f["sha256"]: f["bytes"] for f in S3Store(url).read_entry(1)["files"].values()}.values())

    def crops(store, **kw) -> list[torch.Tensor]:
        return [x["frames"].clone() for x in SegmentBatches(store, batch_size=8, crop=16, seed=3, threads=1, **kw)]

    got = crops(url, cache_limit=need)
    stamps = _objects(cache)
    assert _held(cache) <= need and crops(url, cache_limit=need) and _objects(cache) == stamps
    ingest_yandex(raw, tmp_path / "local", progress=False)
    assert all(torch.equal(x, y) for x, y in zip(got, crops(tmp_path / "local"), strict=True))


def test_s3_clip_appends_racing_both_land(s3_server, tmp_path, monkeypatch):
    """Audio append on S3, two of them racing: the loser rebases on the winner's version and retries."""
    import threading

    from featurestore.ingest.yandex import ingest_yandex
    from featurestore.synth.yandex import synth_yandex
    from loaders import SegmentBatches

    monkeypatch.setenv("FSTORE_CACHE", str(tmp_path / "cache"))
    full = tmp_path / "y"
    synth_yandex(full, tracks=24, artists=4, test_tracks=0, seed=5)
    (full / "test_meta.tsv").unlink(missing_ok=True)
    lines = (full / "train_meta.tsv").read_text().splitlines(keepends=True)
    for name, rows in {"a": lines[1:15], "b1": lines[15:20], "b2": lines[20:]}.items():
        shutil.copytree(full, tmp_path / name, ignore=shutil.ignore_patterns("*.tsv"))
        (tmp_path / name / "train_meta.tsv").write_text(lines[0] + "".join(rows))
    url = f"s3://{BUCKET}/clips-race"
    ingest_yandex(tmp_path / "a", url, progress=False)
    real, done = S3Store.commit, []

    def commit(self, *args, **kw):
        if not done:  # the first append to reach its commit lets the other one commit first
            done.append(1)
            t = threading.Thread(target=ingest_yandex, args=(tmp_path / "b2", url),
                                 kwargs={"progress": False, "append": True})
            t.start()
            t.join()
        return real(self, *args, **kw)

    monkeypatch.setattr(S3Store, "commit", commit)
    summary = ingest_yandex(tmp_path / "b1", url, progress=False, append=True)
    assert any("rebased" in n for n in summary.notes)
    assert S3Store(url).version_numbers() == [1, 2, 3]
    s = Store(url)
    assert s.validate() == [] and sorted(s.ids("train")) == sorted(ln.split("\t")[0] for ln in lines[1:])
    n = sum(int(x["length"].numel()) for x in SegmentBatches(url, batch_size=8, crop=8, threads=1))
    assert n == len(lines) - 1
