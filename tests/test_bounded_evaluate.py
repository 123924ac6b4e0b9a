"""Evaluation in bounded memory at the real sizes (issue 21): the block-at-a-time scorers and writers give
exactly what the whole-split reference functions give."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.fsd.evaluate import write_submission as write_fsd_submission
from models.metrics.yandex_ndcg import ndcg_at_100, read_submission
from models.metrics.yandex_ndcg import write_submission as write_yandex_submission
from models.yandex.evaluate import SIMILARITY_BLOCK_BYTES, holdout_ndcg, query_batch, write_ranked_submission
from models.yandex.rerank import rerank, top_k


def _rankings(n: int, k: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """Random (n, k) rankings that never hold their own query, and artists with 1..6 tracks each (some
    single-track artists, whose queries the metric skips)."""
    rng = np.random.default_rng(seed)
    artists = rng.integers(0, max(2, n // 3), n)
    keys = rng.random((n, n))
    keys[np.arange(n), np.arange(n)] = -1.0
    return torch.as_tensor(np.argsort(-keys, axis=1)[:, :k]), artists


@pytest.mark.parametrize(("n", "k", "block"), [(50, 49, 7), (300, 100, 64), (257, 100, 4096), (120, 30, 1)])
def test_holdout_ndcg_equals_the_official_scorer_bit_for_bit(n, k, block):
    ranking, artists = _rankings(n, k, seed=n + k)
    ids = np.arange(10_000, 10_000 + n) * 7  # track ids unlike the row numbers
    reference = ndcg_at_100({int(q): ids[row].tolist() for q, row in zip(ids, ranking.numpy(), strict=True)},
                            {int(t): int(a) for t, a in zip(ids, artists, strict=True)})
    assert holdout_ndcg(ranking, artists, block=block) == reference


def test_holdout_ndcg_of_a_perfect_ranking_is_one_and_refuses_self_matches():
    artists = np.repeat(np.arange(20), 5)
    emb = torch.nn.functional.one_hot(torch.as_tensor(artists), 20).float() + 0.01 * torch.randn(100, 20)
    assert holdout_ndcg(top_k(emb, 99, batch_size=13), artists) == pytest.approx(1.0)
    bad = top_k(emb, 10)
    bad[3, 0] = 3
    with pytest.raises(ValueError, match="own query"):
        holdout_ndcg(bad, artists)


def test_submission_written_in_blocks_is_the_reference_bytes(tmp_path):
    ranking, _ = _rankings(130, 100, seed=3)
    ids = np.arange(130, dtype=np.int64) * 1_000_003 + 5
    write_ranked_submission(tmp_path / "blocks.tsv", ids, ranking, block=17)
    write_yandex_submission(tmp_path / "ref.tsv", ids.tolist(), ids[ranking.numpy()].tolist())
    assert (tmp_path / "blocks.tsv").read_bytes() == (tmp_path / "ref.tsv").read_bytes()
    assert len(read_submission(tmp_path / "blocks.tsv")) == 130


def test_query_batch_bounds_the_similarity_block_whatever_the_split_size():
    for n in (10, 1_000, 41_377, 208_573, 10_000_000, 10**10):
        b = query_batch(n)
        assert 1 <= b <= 1024
        assert b == 1 or b * n * 4 <= SIMILARITY_BLOCK_BYTES
    assert query_batch(100, most=7) == 7


def test_ranking_is_the_same_whatever_the_query_block():
    emb = torch.randn(90, 16)
    assert torch.equal(top_k(emb, 20, batch_size=1), top_k(emb, 20, batch_size=90))
    assert torch.equal(rerank(emb, 20, 0.2, batch_size=4), rerank(emb, 20, 0.2, batch_size=1024))


def test_fsd_submission_written_in_blocks(tmp_path, monkeypatch):
    """More rows than a block, in the sample submission's row and column order: every line as formatted whole."""
    import models.fsd.evaluate as fsd_evaluate

    monkeypatch.setattr(fsd_evaluate, "SUBMISSION_BLOCK", 4)
    rng = np.random.default_rng(0)
    fnames, classes = [f"c{i:03d}.wav" for i in range(11)], ["Bark", "Zipper_(clothing)", "Accelerating_and_revving"]
    scores = rng.random((11, 3)).astype(np.float32)
    order, cols = rng.permutation(11), [2, 0, 1]
    sample = tmp_path / "sample_submission.csv"
    sample.write_text(",".join(["fname", *(classes[c] for c in cols)]) + "\n"
                      + "".join(f"{fnames[i]},0,0,0\n" for i in order))
    write_fsd_submission(tmp_path / "sub.csv", fnames, classes, scores, sample)
    lines = (tmp_path / "sub.csv").read_text().splitlines()
    assert lines[0] == "fname,Accelerating_and_revving,Bark,Zipper_(clothing)"
    assert lines[1:] == [",".join([fnames[i], *(f"{scores[i, c]:.6f}" for c in cols)]) for i in order]
