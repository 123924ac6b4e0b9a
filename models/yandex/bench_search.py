"""Time the evaluation-scale search: ``python -m models.yandex.bench_search [--n 41377 --device cuda]``.

All-pairs cosine top-100 of n random d-dimensional embeddings (the real test split has 41,377 tracks),
plain and re-ranked, one ``batch_size`` x n similarity block at a time; prints the seconds, the peak
memory and what the full (n x n) float32 matrix would have needed.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from .rerank import rerank, top_k

__all__ = ["time_search"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_search(n: int = 41377, d: int = 128, k: int = 100, batch_size: int = 1024,
                device: str | torch.device = "cpu", seed: int = 0) -> dict[str, float]:
    """Seconds of :func:`top_k` and :func:`rerank` on (n, d) random embeddings on ``device``."""
    device = torch.device(device)
    e = torch.randn(n, d, generator=torch.Generator().manual_seed(seed)).to(device)
    out = {}
    for name, fn in (("top_k_s", lambda: top_k(e, k, batch_size)), ("rerank_s", lambda: rerank(e, k, 0.85, batch_size))):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        out[name] = time.perf_counter() - t
    out["full_matrix_gb"] = n * n * 4 / 1e9
    out["peak_gpu_gb" if device.type == "cuda" else "peak_rss_gb"] = (
        torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=41377, help="Tracks (queries = gallery).")
    p.add_argument("--d", type=int, default=128, help="Embedding size.")
    p.add_argument("--batch-size", type=int, default=1024, help="Queries per similarity block.")
    p.add_argument("--device", default="cpu", help="cpu or cuda.")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default).")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    r = time_search(a.n, a.d, batch_size=a.batch_size, device=a.device)
    print(f"n={a.n} d={a.d} batch={a.batch_size} device={a.device} threads={torch.get_num_threads()}: "
          + ", ".join(f"{k} {v:.2f}" for k, v in r.items()))


if __name__ == "__main__":
    main()
