"""Whole engine runs are bit-identical with the cheaper Sinkhorn loop and text-encoder plan and with the earlier ones.

Each method trains twice on a tiny dataset: as the library runs now, and with the reference copies of the two paths
(``reference_paths``) patched in. Trained parameters, the split, the training log (without timings) and the
per-class accuracy must be equal, bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from reference_paths import reference_stage, reference_text_call
from visprompt.config import load_config
from visprompt.engine import train_run
from visprompt.models.text import TextEncoder
from visprompt.selection import sinkhorn
from worlds import tiny_world


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    return tiny_world(tmp_path_factory.mktemp("exact"))


def _train(world: dict[str, Path], method: str, out: Path) -> Path:
    overrides = [
        "data.dataset=folder", f"data.path={world['data']}", "data.shots=4", "data.augment=false",
        f"backbone.arch={world['arch']}", "backbone.weights=null", "noise.type=sym", "noise.rate=0.5",
        "optim.epochs=2", f"optim.batch_size={2 if method == 'cocoop' else 6}", "optim.eval_batch_size=8",
        "prompt.n_ctx=4", "run.device=cpu", f"run.out_dir={out}", "run.name=run", "run.feature_store=null",
    ]  # fmt: skip
    return train_run(load_config(overrides=overrides, method=method), show_progress=False).run_dir


def _record(run_dir: Path) -> dict:
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        "params": {k: v.numpy().tobytes() for k, v in load_file(run_dir / "checkpoint.safetensors").items()},
        "split": (run_dir / "split.json").read_bytes(),
        "log": [{k: v for k, v in r.items() if k != "epoch_time"} for r in log],
        "per_class": metrics["per_class_accuracy"],
        "top1": metrics["top1"],
    }


@pytest.mark.parametrize(
    "method",
    [
        "nlprompt",  # full-set OT
        "visprompt",  # per-batch OT and the per-image text plan
        *(pytest.param(m, marks=pytest.mark.slow) for m in ("visprompt-faithful", "visprompt-plus", "cocoop")),
    ],
)
def test_runs_match_the_reference_paths(world, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    new = _record(_train(world, method, tmp_path / "new"))
    monkeypatch.setattr(sinkhorn, "_solve_stage", reference_stage)
    monkeypatch.setattr(TextEncoder, "__call__", reference_text_call)
    ref = _record(_train(world, method, tmp_path / "ref"))
    assert new["params"] and new["log"]
    assert new == ref
    if method != "cocoop":
        assert any("ot_iterations" in r for r in new["log"])  # the OT split really ran
