"""Every family's ``fstore train`` runs torch on one CPU thread: two OpenMP threads spin against the
loader's fill thread (and against anything else on a busy host) between ops. `train speakers` had no
such setting: on this 2-core host with the other core busy its steps took 5-6 s instead of about 1."""

from __future__ import annotations

import importlib

import pytest
import torch
from click.testing import CliRunner

from featurestore.cli import main
from featurestore.store.errors import FstoreError

TRAINERS = {"skip": ("models.skip.train", "train_skip"), "melon": ("models.melon.train", "train_melon"),
            "yandex": ("models.yandex.train", "train_yandex"), "fsd": ("models.fsd.train", "train_fsd"),
            "speakers": ("models.speakers", "train_speakers")}


@pytest.mark.parametrize("family", sorted(TRAINERS))
def test_train_runs_torch_on_one_cpu_thread(family, tmp_path, monkeypatch):
    module, name = TRAINERS[family]
    seen: list[int] = []

    def trainer(*args, **kwargs):
        # a trainer given ``torch_threads`` sets it itself; the others run with what the command set
        seen.append(kwargs.get("torch_threads") or torch.get_num_threads())
        raise FstoreError("stopped by the test")

    monkeypatch.setattr(importlib.import_module(module), name, trainer)
    store = tmp_path / "store"
    store.mkdir()
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        r = CliRunner().invoke(main, ["train", family, str(store), str(tmp_path / "run")])
    finally:
        torch.set_num_threads(before)
    assert seen == [1], r.output
    assert r.exit_code == 1 and "stopped by the test" in r.output
