"""The Melon ablation runner's table: mean +- std over seeds, and rows inside the default's seed spread."""

from __future__ import annotations

from models.melon.ablation import summarise


def _doc(model: float, cooc: float, no_title: float, ae: float) -> dict:
    return {"scores": {"model": model, "cooccurrence": cooc, "most_popular": 0.1},
            "components": {"autoencoder+cooccurrence": no_title, "autoencoder": ae}}


def test_summarise_means_spread_and_notes():
    results = {
        "default": [_doc(0.50, 0.45, 0.49, 0.44), _doc(0.52, 0.45, 0.50, 0.46)],
        "close": [_doc(0.51, 0.45, 0.49, 0.44), _doc(0.51, 0.45, 0.49, 0.44)],
        "far": [_doc(0.46, 0.45, 0.46, 0.40), _doc(0.46, 0.45, 0.46, 0.40)],
    }
    lines = summarise(results)
    assert lines[0].startswith("| row | submitted | no title model | autoencoder |")
    default, close, far = lines[2:]
    assert default.startswith("| default | 0.5100 ± 0.0141 | 0.4950 ± 0.0071 | 0.4500 ± 0.0141 | +0.0600 ± 0.0141 |")
    assert close.endswith("+0.0600 ± 0.0000 (inside the default row's seed spread) |")
    assert far.endswith("+0.0100 ± 0.0000 |")
