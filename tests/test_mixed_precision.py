"""The mixed-precision code paths, run on CPU: bf16 autocast end to end, and fp16 autocast with a GradScaler
(refused on CPU for users, forced here so the first GPU user does not meet its first bug)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import visprompt.engine.runner as runner
from visprompt.config import load_config
from visprompt.engine import train_run
from visprompt.engine.runtime import Precision
from worlds import tiny_world


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("precision")
    return tiny_world(base, train=5, test=2, size=12)


def config(world, out: Path, method: str, precision: str):
    return load_config(method=method, overrides=[
        "data.dataset=folder", f"data.path={world['data']}", "data.shots=2", "data.augment=false",
        f"backbone.arch={world['arch']}", "backbone.weights=null", "noise.type=sym", "noise.rate=0.25",
        "optim.epochs=2", "optim.batch_size=3", "optim.eval_batch_size=8", "prompt.n_ctx=2",
        f"optim.precision={precision}", "run.device=cpu", f"run.out_dir={out}", "run.name=run",
    ])  # fmt: skip


def finite_run(result) -> None:
    assert result.status == "done"
    assert math.isfinite(result.metrics["top1"]) and result.metrics["epochs"] == 2
    log = [json.loads(line) for line in (result.run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2] and all(math.isfinite(r["loss"]) for r in log)


@pytest.mark.parametrize("method", ["coop", pytest.param("visprompt", marks=pytest.mark.slow)])
def test_bf16_autocast_trains_on_cpu(world, tmp_path, method) -> None:
    result = train_run(config(world, tmp_path, method, "bf16"), show_progress=False)
    finite_run(result)
    assert result.metrics["precision"] == "bf16"


def test_fp16_with_grad_scaler_trains_and_saves_the_scaler(world, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(runner, "resolve_precision", lambda name, device: Precision(device.type, torch.float16))
    result = train_run(config(world, tmp_path, "coop", "fp32"), show_progress=False)
    finite_run(result)
    assert result.metrics["precision"] == "fp16"
    state = torch.load(result.run_dir / "state.pt", weights_only=True)
    assert state["scaler"] and state["scaler"]["scale"] > 0  # the scaler ran (an enabled scaler has a scale)
