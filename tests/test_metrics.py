"""Official competition metrics (models.metrics) against the reference vectors in shared/reference/metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.metrics import (
    average_accuracy,
    evaluate_skip,
    lwlrap,
    lwlrap_per_class,
    melon_score,
    ndcg_at_100,
    ndcg_per_query,
    parse_submission_lines,
    read_skip_submission,
    read_yandex_submission,
    top_k_cosine,
    write_skip_submission,
    write_yandex_submission,
)

# Copies of the reference vectors computed with the official scorers (../shared/reference/metrics/):
# they are test data, kept in the repository so the metric tests run in any clone.
REFERENCE_DIR = Path(__file__).resolve().parent / "data" / "reference_metrics"
SHARED_REFERENCE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "metrics"
REFERENCE_FILES = ["spotify_skip_aa.json", "fsd_lwlrap.json", "yandex_artist_ndcg.json", "melon_playlist_score.json"]


def _load(name: str) -> dict:
    with (REFERENCE_DIR / name).open() as fh:
        return json.load(fh)


@pytest.mark.parametrize("name", REFERENCE_FILES)
def test_reference_copies_are_current(name: str) -> None:
    """The copies hold cases; where the shared originals are beside the clone, they are byte-identical."""
    data = _load(name)
    assert data["cases"] and all("name" in c for c in data["cases"])
    shared = SHARED_REFERENCE_DIR / name
    if shared.is_file():
        assert shared.read_bytes() == (REFERENCE_DIR / name).read_bytes(), f"{name}: copy differs from {shared}"


def _close(actual: float, expected: float) -> bool:
    return actual == expected or math.isclose(actual, expected, rel_tol=1e-12)


def _assert_all_close(actual, expected, what: str) -> None:
    actual = [float(x) for x in actual]
    assert len(actual) == len(expected), f"{what}: {len(actual)} values, expected {len(expected)}"
    bad = [(i, a, e) for i, (a, e) in enumerate(zip(actual, expected, strict=True)) if not _close(a, e)]
    assert not bad, f"{what}: {len(bad)} mismatches, first (index, got, expected): {bad[:3]}"


def _case_ids(name: str) -> list[str]:
    return [c["name"] for c in _load(name)["cases"]]


# ----------------------------------------------------------------------------- Spotify skip prediction

SKIP_FILE = "spotify_skip_aa.json"


def _ave_pre_reference(sub, truth) -> float:
    """Transcription of the crowdAI starter kit's ``ave_pre`` loop, for property tests."""
    s = t = 0.0
    c = 1.0
    for x, y in zip(sub, truth, strict=True):
        if x == y:
            s += 1.0
            t += s / c
        c += 1
    return t / len(truth)


@pytest.mark.parametrize("case_name", _case_ids(SKIP_FILE))
def test_skip_reference_cases(case_name: str) -> None:
    ref = _load(SKIP_FILE)
    case = next(c for c in ref["cases"] if c["name"] == case_name)
    truth = ref["ground_truth"]
    score = evaluate_skip(truth, case["predictions"])
    assert _close(score.mean_average_accuracy, case["expected_mean_average_accuracy"])
    assert _close(score.first_prediction_accuracy, case["expected_first_prediction_accuracy"])
    _assert_all_close(score.per_session, case["expected_per_session_aa"], f"{case_name} per-session AA")
    single = [average_accuracy(t, p) for t, p in zip(truth, case["predictions"], strict=True)]
    _assert_all_close(single, case["expected_per_session_aa"], f"{case_name} average_accuracy")


def test_skip_submission_roundtrip(tmp_path: Path) -> None:
    ref = _load(SKIP_FILE)
    truth = ref["ground_truth"]
    lengths = [len(t) for t in truth]
    for case in ref["cases"]:
        path = tmp_path / f"{case['name']}.txt"
        write_skip_submission(path, case["predictions"])
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp left
        first = path.read_text().splitlines()[0]
        assert first == "".join(str(v) for v in case["predictions"][0])
        preds = read_skip_submission(path, lengths)
        assert [p.tolist() for p in preds] == case["predictions"]
        assert _close(
            evaluate_skip(truth, preds).mean_average_accuracy, case["expected_mean_average_accuracy"]
        )


def test_skip_mismatched_session_length_names_index() -> None:
    truth = [[1, 0, 1], [0, 0], [1, 1, 1, 0]]
    pred = [[1, 0, 1], [0, 0], [1, 1, 1]]
    with pytest.raises(ValueError, match=r"session 2\b.*3 values.*4"):
        evaluate_skip(truth, pred)
    with pytest.raises(ValueError, match="2 predicted sessions for 3"):
        evaluate_skip(truth, pred[:2])
    with pytest.raises(ValueError, match=r"prediction session 1: values must be 0 or 1, got 2"):
        evaluate_skip(truth, [[1, 0, 1], [0, 2], [1, 1, 1, 0]])


def test_skip_read_submission_errors(tmp_path: Path) -> None:
    path = tmp_path / "sub.txt"
    path.write_text("0110\n101\n")
    assert [p.tolist() for p in read_skip_submission(path, [4, 3])] == [[0, 1, 1, 0], [1, 0, 1]]

    path.write_text("0110\n1011\n")
    with pytest.raises(ValueError, match=rf"{path.name}:2: expected 3 predictions, found 4"):
        read_skip_submission(path, [4, 3])

    path.write_text("0110\n1x1\n")
    with pytest.raises(ValueError, match=rf"{path.name}:2: invalid character 'x' at column 2"):
        read_skip_submission(path, [4, 3])

    path.write_text("0110\n")
    with pytest.raises(ValueError, match=rf"{path.name}: expected 2 lines \(one per session\), found 1"):
        read_skip_submission(path, [4, 3])

    path.write_text("0110\n101\n111\n")
    with pytest.raises(ValueError, match="expected 2 lines"):
        read_skip_submission(path, [4, 3])


_sessions = st.lists(st.integers(0, 1), min_size=1, max_size=20)


@given(_sessions)
def test_skip_perfect_prediction_is_one(truth: list[int]) -> None:
    assert average_accuracy(truth, truth) == 1.0


@given(st.lists(st.tuples(_sessions, st.randoms(use_true_random=False)), min_size=1, max_size=30))
@settings(max_examples=50, deadline=None)
def test_skip_matches_reference_loop_and_bounds(data) -> None:
    truth = [t for t, _ in data]
    pred = [[rnd.randint(0, 1) for _ in t] for t, rnd in data]
    score = evaluate_skip(truth, pred)
    expected = [_ave_pre_reference(p, t) for p, t in zip(pred, truth, strict=True)]
    assert score.per_session.tolist() == expected
    assert all(0.0 <= v <= 1.0 for v in expected)
    assert 0.0 <= score.mean_average_accuracy <= 1.0


# ----------------------------------------------------------------------------- FSDKaggle2019 lwlrap

LWLRAP_FILE = "fsd_lwlrap.json"


def _lwlrap_reference(truth: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample loop transcription of Dan Ellis's reference (incl. its argsort tie behaviour)."""
    num_samples, num_classes = scores.shape
    cumulative = np.zeros(num_classes)
    count = np.zeros(num_classes, dtype=np.int64)
    for sample_truth, sample_scores in zip(truth, scores, strict=True):
        pos = np.flatnonzero(sample_truth > 0)
        if not len(pos):
            continue
        retrieved = np.argsort(sample_scores)[::-1]
        rankings = np.zeros(num_classes, dtype=np.int64)
        rankings[retrieved] = range(num_classes)
        retrieved_true = np.zeros(num_classes, dtype=bool)
        retrieved_true[rankings[pos]] = True
        hits = np.cumsum(retrieved_true)
        cumulative[pos] += hits[rankings[pos]] / (1 + rankings[pos].astype(np.float64))
        count[pos] += 1
    return cumulative / np.maximum(1, count), count / float(np.sum(count))


@pytest.mark.parametrize("case_name", _case_ids(LWLRAP_FILE))
def test_lwlrap_reference_cases(case_name: str) -> None:
    ref = _load(LWLRAP_FILE)
    case = next(c for c in ref["cases"] if c["name"] == case_name)
    truth = np.asarray(case["truth"])
    scores = np.asarray(case["scores"])
    assert _close(lwlrap(truth, scores), case["expected_lwlrap"])
    per_class, weight = lwlrap_per_class(truth, scores)
    _assert_all_close(per_class, case["expected_per_class_lwlrap"], f"{case_name} per-class lwlrap")
    _assert_all_close(weight, case["expected_per_class_weight"], f"{case_name} per-class weight")
    assert _close(float(np.sum(per_class * weight)), case["expected_lwlrap"])


@given(st.integers(1, 40), st.integers(1, 12), st.integers(1, 4), st.integers(0, 2**32 - 1))
@settings(max_examples=60, deadline=None)
def test_lwlrap_matches_reference_loop_with_ties(n: int, classes: int, levels: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    truth = (rng.random((n, classes)) < 0.3).astype(np.int64)
    truth[0, rng.integers(classes)] = 1  # at least one positive label
    scores = rng.integers(0, levels, size=(n, classes)).astype(np.float64)  # heavy ties
    per_class, weight = lwlrap_per_class(truth, scores)
    ref_per_class, ref_weight = _lwlrap_reference(truth, scores)
    assert np.array_equal(per_class, ref_per_class)
    assert np.array_equal(weight, ref_weight)
    assert 0.0 < lwlrap(truth, scores) <= 1.0


def test_lwlrap_perfect_and_errors() -> None:
    truth = np.eye(5, dtype=int)
    assert lwlrap(truth, truth.astype(float)) == 1.0
    with pytest.raises(ValueError, match="shape"):
        lwlrap(truth, np.zeros((5, 4)))
    with pytest.raises(ValueError, match="no positive labels"):
        lwlrap(np.zeros((3, 4)), np.zeros((3, 4)))


# ----------------------------------------------------------------------------- Yandex Cup 2022 nDCG@100

YANDEX_FILE = "yandex_artist_ndcg.json"


def _track_artist(ref: dict) -> dict[int, int]:
    meta = ref["tracks_meta"]
    return dict(zip(meta["trackid"], meta["artistid"], strict=True))


@pytest.mark.parametrize("case_name", _case_ids(YANDEX_FILE))
def test_yandex_reference_cases(case_name: str, tmp_path: Path) -> None:
    ref = _load(YANDEX_FILE)
    case = next(c for c in ref["cases"] if c["name"] == case_name)
    track_artist = _track_artist(ref)
    submission = parse_submission_lines(case["submission_tsv_lines"])
    assert all(len(r) <= 100 and q not in r for q, r in submission.items())
    assert _close(ndcg_at_100(submission, track_artist), case["expected_ndcg_at_100"])

    per_query = ndcg_per_query(submission, track_artist)
    assert all(0.0 <= v <= 1.0 for v in per_query.values())

    path = tmp_path / "submission.tsv"
    path.write_text("\n".join(case["submission_tsv_lines"]) + "\n")
    assert read_yandex_submission(path) == submission
    # Round trip through the writer (cleaned rankings), still the same score.
    out = tmp_path / "rewritten.tsv"
    write_yandex_submission(out, list(submission), list(submission.values()))
    assert _close(ndcg_at_100(read_yandex_submission(out), track_artist), case["expected_ndcg_at_100"])


def test_yandex_semantics_small() -> None:
    track_artist = {1: 10, 2: 10, 3: 10, 4: 20, 5: 30, 6: 30}
    # Track 4's artist has one track: skipped. Query 5 missing: scores 0. Query listed in its own ranking.
    submission = {1: [1, 2, 4, 3], 2: [4, 1, 3], 3: [5, 6, 4], 4: [1, 2], 6: [5]}
    per_query = ndcg_per_query(submission, track_artist)
    assert list(per_query) == [1, 2, 3, 5, 6]
    idcg2 = 1.0 + 1.0 / math.log2(3)
    assert math.isclose(per_query[1], (1.0 + 1.0 / math.log2(4)) / idcg2, rel_tol=1e-15)
    assert math.isclose(per_query[2], (1.0 / math.log2(3) + 1.0 / math.log2(4)) / idcg2, rel_tol=1e-15)
    assert per_query[3] == 0.0 and per_query[5] == 0.0 and per_query[6] == 1.0
    with pytest.raises(ValueError, match="result track 99 is not in the track metadata"):
        ndcg_at_100({1: [99]}, track_artist)


def test_yandex_malformed_lines(tmp_path: Path) -> None:
    assert parse_submission_lines(["1\t2 3 1 4", ""]) == {1: [2, 3, 4]}
    with pytest.raises(ValueError, match=r"sub\.tsv:2: expected 'query<TAB>id1 id2 \.\.\.', found no tab"):
        parse_submission_lines(["1\t2 3", "2 1 3"], source="sub.tsv")
    with pytest.raises(ValueError, match=r"<lines>:1: query id 'x' is not an integer"):
        parse_submission_lines(["x\t2 3"])
    with pytest.raises(ValueError, match=r"<lines>:1: result #2 '' is not an integer"):
        parse_submission_lines(["1\t2  3"])
    with pytest.raises(ValueError, match=r"<lines>:1: result #2 'a' is not an integer"):
        parse_submission_lines(["1\t2 a 3"])
    with pytest.raises(ValueError, match=r"<lines>:1: query 1 has an empty ranking"):
        parse_submission_lines(["1\t"])
    with pytest.raises(ValueError, match=r"<lines>:2: query 1 appears more than once"):
        parse_submission_lines(["1\t2", "1\t3"])
    with pytest.raises(ValueError, match=r"<lines>:2: blank line"):
        parse_submission_lines(["1\t2", "", "2\t1"])

    path = tmp_path / "bad.tsv"
    path.write_text("1\t2 3\n2\t1 three\n")
    with pytest.raises(ValueError, match=rf"{path.name}:2: result #2 'three' is not an integer"):
        read_yandex_submission(path)


def test_yandex_write_submission_tensor_and_atomic(tmp_path: Path) -> None:
    path = tmp_path / "sub.tsv"
    path.write_text("old\n")
    write_yandex_submission(path, torch.tensor([7, 8]), torch.tensor([[8, 9], [7, 9]]))
    assert path.read_text() == "7\t8 9\n8\t7 9\n"
    assert [p.name for p in tmp_path.iterdir()] == ["sub.tsv"]
    with pytest.raises(ValueError, match="2 query ids but 1 neighbour rows"):
        write_yandex_submission(path, [7, 8], [[8, 9]])
    assert path.read_text() == "7\t8 9\n8\t7 9\n"


# ----------------------------------------------------------------------------- Melon playlist continuation

MELON_FILE = "melon_playlist_score.json"


@pytest.mark.parametrize("case_name", _case_ids(MELON_FILE))
def test_melon_reference_cases(case_name: str) -> None:
    ref = _load(MELON_FILE)
    case = next(c for c in ref["cases"] if c["name"] == case_name)
    result = melon_score(ref["ground_truth"], case["recommendations"])
    assert _close(result["song_ndcg"], case["expected_song_ndcg"])
    assert _close(result["tag_ndcg"], case["expected_tag_ndcg"])
    assert _close(result["score"], case["expected_score"])


def test_melon_submission_checks() -> None:
    ref = _load(MELON_FILE)
    gt = ref["ground_truth"]
    recs = [dict(r) for r in ref["cases"][0]["recommendations"]]
    with pytest.raises(ValueError, match="playlist ids differ"):
        melon_score(gt, recs[:-1])
    bad = [dict(r) for r in recs]
    bad[3]["songs"] = bad[3]["songs"][:99]
    with pytest.raises(ValueError, match=rf"playlist {bad[3]['id']}: expected 100 recommended songs, got 99"):
        melon_score(gt, bad)
    bad = [dict(r) for r in recs]
    bad[0]["tags"] = [bad[0]["tags"][0]] * 10
    with pytest.raises(ValueError, match="recommended tags contain duplicates"):
        melon_score(gt, bad)
    perfect = [
        {
            "id": g["id"],
            "songs": (g["songs"] + [-i - 1 for i in range(100)])[:100],
            "tags": (g["tags"] + [f"none{i}" for i in range(10)])[:10],
        }
        for g in gt
    ]
    result = melon_score(gt, perfect)
    # Songs: every gt song is recalled at the top; tags are capped at 10 while IDCG runs over all gt tags.
    assert math.isclose(result["song_ndcg"], 1.0, rel_tol=1e-12)
    assert result["tag_ndcg"] <= 1.0


# ----------------------------------------------------------------------------- cosine top-k retrieval


def _brute_force(emb: torch.Tensor, k: int, exclude_self: bool) -> tuple[torch.Tensor, torch.Tensor]:
    normed = emb / emb.norm(dim=1, keepdim=True)
    sims = (normed @ normed.T).cpu().numpy()
    if exclude_self:
        np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return torch.from_numpy(order), torch.from_numpy(np.take_along_axis(sims, order, axis=1))


@pytest.mark.parametrize("batch_size", [1, 7, 4096])
@pytest.mark.parametrize("exclude_self", [True, False])
def test_top_k_cosine_matches_brute_force(batch_size: int, exclude_self: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    emb = torch.randn(53, 16, generator=gen, dtype=torch.float64) * torch.rand(
        53, 1, generator=gen, dtype=torch.float64
    )
    idx, scores = top_k_cosine(emb, k=10, batch_size=batch_size, exclude_self=exclude_self)
    assert idx.dtype == torch.long and idx.shape == (53, 10) and scores.shape == (53, 10)
    ref_idx, ref_scores = _brute_force(emb, 10, exclude_self)
    assert torch.equal(idx, ref_idx)
    assert torch.allclose(scores, ref_scores, rtol=1e-12, atol=1e-12)
    rows = torch.arange(53)[:, None]
    if exclude_self:
        assert not (idx == rows).any()
    else:
        assert torch.equal(idx[:, 0], torch.arange(53))


def test_top_k_cosine_excludes_self_with_duplicates_and_validates() -> None:
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    idx, scores = top_k_cosine(emb, k=3)
    assert not (idx == torch.arange(4)[:, None]).any()
    assert idx[0, 0].item() == 1 and idx[1, 0].item() == 0
    assert math.isclose(scores[0, 0].item(), 1.0, rel_tol=1e-6)
    with pytest.raises(ValueError, match="at most 3 neighbours"):
        top_k_cosine(emb, k=4)
    assert top_k_cosine(emb, k=4, exclude_self=False)[0].shape == (4, 4)
    with pytest.raises(ValueError, match="2-D"):
        top_k_cosine(emb[0], k=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_top_k_cosine_cuda_matches_cpu() -> None:
    gen = torch.Generator().manual_seed(1)
    emb = torch.randn(1000, 64, generator=gen, dtype=torch.float64)
    cpu_idx, cpu_scores = top_k_cosine(emb, k=20, batch_size=256)
    gpu_idx, gpu_scores = top_k_cosine(emb.cuda(), k=20, batch_size=256)
    assert gpu_idx.device.type == "cuda"
    assert torch.equal(gpu_idx.cpu(), cpu_idx)
    assert torch.allclose(gpu_scores.cpu(), cpu_scores, rtol=1e-10, atol=1e-12)


def test_speaker_accuracy() -> None:
    from models.metrics import accuracy

    assert accuracy([1, 2, 3, 4], [1, 2, 0, 4]) == 0.75
    with pytest.raises(ValueError, match="equal length"):
        accuracy([1, 2], [1])
    with pytest.raises(ValueError, match="no utterances"):
        accuracy([], [])


def test_write_top100_submission_scores_with_the_official_metric(tmp_path) -> None:
    import torch

    from models.metrics import read_yandex_submission
    from models.metrics.retrieval import write_top100_submission
    from models.metrics.yandex_ndcg import ndcg_at_100

    g = torch.Generator().manual_seed(0)
    artists = torch.arange(30).repeat_interleave(5)
    emb = torch.randn(30, 16, generator=g)[artists] + 0.05 * torch.randn(150, 16, generator=g)
    ids = [1000 + i for i in range(150)]
    write_top100_submission(tmp_path / "sub.tsv", ids, emb, k=100)
    sub = read_yandex_submission(tmp_path / "sub.tsv")
    assert len(sub) == 150 and all(len(v) == 100 and q not in v for q, v in sub.items())
    assert ndcg_at_100(sub, dict(zip(ids, artists.tolist(), strict=True))) > 0.99
