"""The evaluate contract every family's ``fstore evaluate ... --metrics-json`` writes (README, "Evaluate
contract"): one shape, checked in each family's end-to-end test with that family's row names."""
from __future__ import annotations

import math


def assert_evaluate_contract(doc: dict, *, metric: str, split: str, baselines: set[str],
                             components: set[str] = frozenset(), ceiling: set[str] = frozenset()) -> None:
    """``doc`` is exactly {"metric", "split", "scores": {"model", *baselines}, "components", "ceiling"}
    with finite float values: the submitted model and the simple baselines under ``scores``, blend parts
    and variants under ``components``, oracle or Bayes rows under ``ceiling``."""
    assert set(doc) == {"metric", "split", "scores", "components", "ceiling"}, sorted(doc)
    assert doc["metric"] == metric and doc["split"] == split, (doc["metric"], doc["split"])
    assert set(doc["scores"]) == {"model", *baselines}, sorted(doc["scores"])
    assert set(doc["components"]) == set(components), sorted(doc["components"])
    assert set(doc["ceiling"]) == set(ceiling), sorted(doc["ceiling"])
    for group in ("scores", "components", "ceiling"):
        for name, value in doc[group].items():
            assert isinstance(value, float) and math.isfinite(value), (group, name, value)
