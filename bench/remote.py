"""``fstore bench remote``: SessionBatches from an S3 store (a local moto server) against a local store.

In one process: a moto S3 server is started on 127.0.0.1 (never a cloud), a synthetic MSSD release is
ingested twice, to ``s3://fstore-bench/store`` and to a local folder; then, side by side:
1. S3, cold: open the loader with an empty local cache (download the version's objects, build the
   packed session cache) and run epoch 1;
2. S3, warm: the same loader's epochs 2..epochs+1; and a new loader on the filled cache (nothing downloaded) + 1 epoch;
3. local: open + epoch 1 (packed cache built), epochs 2..epochs+1, and a new loader + 1 epoch.
Warm / local should be ~1: once the cache holds the version, the loader reads local files either way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from featurestore.ingest.spotify import ingest_spotify
from featurestore.synth.spotify import synth_spotify
from loaders import SessionBatches

BUCKET = "fstore-bench"


@contextlib.contextmanager
def moto_s3(bucket: str = BUCKET) -> Iterator[dict[str, str]]:
    """A moto S3 server on a free local port holding ``bucket``, the AWS variables pointing at it (yielded),
    restored after. The tests start theirs with it too."""
    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "bench",
           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        boto3.client("s3").create_bucket(Bucket=bucket)
        yield env
    finally:
        server.stop()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _epoch(loader: SessionBatches, epoch: int) -> int:
    loader.set_epoch(epoch)
    return sum(int(b["session"].numel()) for b in loader)


def _open_and_epoch(store, batch_size: int, **kw) -> tuple[float, SessionBatches, int]:
    t = time.perf_counter()
    loader = SessionBatches(store, batch_size=batch_size, order="random", seed=0, **kw)
    n = _epoch(loader, 1)
    return time.perf_counter() - t, loader, n


def _timed_epochs(loader: SessionBatches, epochs: int) -> tuple[float, int]:
    """Epochs 2..epochs+1 of an open loader: (seconds, sessions)."""
    t = time.perf_counter()
    n = sum(_epoch(loader, e) for e in range(2, epochs + 2))
    return time.perf_counter() - t, n


def run(sessions: int = 100_000, tracks: int = 20_000, batch_size: int = 1024,
        cache_limit: int | None = None, epochs: int = 5) -> list[str]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request log lines
    with tempfile.TemporaryDirectory(prefix="fstore-bench-remote-") as tmp, moto_s3():
        raw, local, cache = Path(tmp, "raw"), Path(tmp, "local.fstore"), Path(tmp, "s3cache")
        synth_spotify(raw, sessions=sessions, tracks=tracks, seed=0, train_files=4)
        url = f"s3://{BUCKET}/store"
        t = time.perf_counter()
        ingest_spotify(raw, url, progress=False, source_checksums=False)
        t_up = time.perf_counter() - t
        t = time.perf_counter()
        ingest_spotify(raw, local, progress=False, source_checksums=False)
        t_local_ingest = time.perf_counter() - t
        old_cache = os.environ.get("FSTORE_CACHE")
        os.environ["FSTORE_CACHE"] = str(cache)  # the S3 object cache of this run only
        try:
            cold, s3_loader, n = _open_and_epoch(url, batch_size, cache_limit=cache_limit)
            warm2, n2 = _timed_epochs(s3_loader, epochs)
            warm_open, _, _ = _open_and_epoch(url, batch_size, cache_limit=cache_limit)
        finally:
            if old_cache is None:
                os.environ.pop("FSTORE_CACHE", None)
            else:
                os.environ["FSTORE_CACHE"] = old_cache
        first, local_loader, n_local = _open_and_epoch(local, batch_size)
        local2, _ = _timed_epochs(local_loader, epochs)
        local_open, _, _ = _open_and_epoch(local, batch_size)
        held = sum(p.stat().st_size for p in cache.glob("*/objects/*"))
        if n != n_local:
            raise RuntimeError(f"S3 epoch has {n} sessions, local {n_local}: not the same store")
        rate = n / 1e3
        return [
            f"SessionBatches on a local moto S3 server vs a local store: {n:,} sessions an epoch, batch {batch_size}"
            f"{f', cache_limit {cache_limit:,} B' if cache_limit else ''}; {held / 1e6:.1f} MB of objects cached",
            f"  ingest      S3 {t_up:6.2f} s   local {t_local_ingest:6.2f} s   ratio {t_up / t_local_ingest:5.2f}x",
            f"  open+epoch1 S3 cold {cold:6.2f} s ({rate / cold:7.1f} k sessions/s)   local {first:6.2f} s   "
            f"ratio {cold / first:5.2f}x",
            f"  epochs 2-{epochs + 1}  S3 warm {warm2:6.2f} s ({n2 / 1e3 / warm2:7.1f} k sessions/s)   local {local2:6.2f} s   "
            f"ratio {warm2 / local2:5.2f}x",
            f"  new loader  S3 warm {warm_open:6.2f} s   local {local_open:6.2f} s   ratio {warm_open / local_open:5.2f}x"
            " (open on the filled cache + 1 epoch: nothing downloaded)",
        ]


if __name__ == "__main__":
    import sys

    args = [int(a) for a in sys.argv[1:3]]
    print("\n".join(run(*args)))
