"""The sweep runner on a local Ray instance (CPU): skip, retry, resume after an interruption, the command.

The runs use a fake run function that writes the run directory files the engine writes (config.yaml,
log.jsonl, metrics.json, status, error.txt), resumes from its log and can fail or crash on demand, so the
runner's logic is tested in seconds. One Ray session serves the whole module.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

ray = pytest.importorskip("ray")

from visprompt.commands import sweep as sweep_command  # noqa: E402
from visprompt.config import RunConfig, to_yaml  # noqa: E402
from visprompt.errors import ConfigError, VispromptError  # noqa: E402
from visprompt.sweep import expand_sweep, load_sweep, read_status, run_sweep  # noqa: E402


@dataclass(frozen=True)
class FakeRun:
    """Writes a run directory like the engine; ``fail``/``crash`` name runs whose first attempts go wrong."""

    fail: tuple[str, ...] = ()  # raise on the first attempt
    always_fail: tuple[str, ...] = ()  # raise on every attempt
    crash: tuple[str, ...] = ()  # kill the worker process on the first attempt
    config_error: tuple[str, ...] = ()  # raise a user error (not worth retrying)
    epoch_s: float = 0.0  # seconds per epoch

    def __call__(self, cfg: RunConfig) -> dict:
        run_dir = Path(cfg.run.out_dir) / cfg.run.name
        run_dir.mkdir(parents=True, exist_ok=True)
        with (run_dir / "calls.txt").open("a") as f:
            f.write(f"{os.getpid()}\n")
        attempt = len((run_dir / "calls.txt").read_text().splitlines())
        if read_status(run_dir) == "done":
            return {}
        _write(run_dir / "status", "running\n")
        _write(run_dir / "config.yaml", to_yaml(cfg))
        if cfg.run.name in self.always_fail or (cfg.run.name in self.fail and attempt == 1):
            _write(run_dir / "error.txt", "RuntimeError: injected failure\n")
            _write(run_dir / "status", "failed\n")
            raise RuntimeError(f"injected failure in {cfg.run.name}")
        if cfg.run.name in self.config_error:
            raise ConfigError(f"data.root: {cfg.data.root} does not exist")
        if cfg.run.name in self.crash and attempt == 1:
            os._exit(3)
        log_file = run_dir / "log.jsonl"
        records = log_file.read_text().splitlines() if log_file.exists() else []
        for epoch in range(len(records) + 1, cfg.optim.epochs + 1):  # resume after the last logged epoch
            time.sleep(self.epoch_s)
            records.append(json.dumps({"epoch": epoch, "loss": 1.0 / epoch, "sel_precision": 0.9, "sel_recall": 0.8}))
            _write(log_file, "".join(r + "\n" for r in records))
        metrics = {"top1": 90.0 - 50 * cfg.noise.rate + cfg.run.seed, "macro_f1": 80.0}
        _write(run_dir / "metrics.json", json.dumps(metrics))
        _write(run_dir / "status", "done\n")
        return metrics


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.fixture(scope="module", autouse=True)
def ray_local():
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import the tests folder
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def make_runs(tmp_path: Path, epochs: int = 3) -> list:
    grid = {"base": {"optim.epochs": epochs},
            "grid": {"method": ["coop", "visprompt"], "noise.rate": [0.25, 0.5]}}  # fmt: skip
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return expand_sweep(load_sweep(path, out_dir=tmp_path / "runs"))


def snapshot(run_dir: Path) -> dict:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(run_dir.iterdir())}


def calls(run) -> int:
    path = run.path / "calls.txt"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_four_runs_complete_then_a_rerun_skips_them(tmp_path) -> None:
    runs = make_runs(tmp_path)
    seen = []
    result = run_sweep(runs, FakeRun(), on_progress=seen.append)
    assert result.ok and [o.status for o in result.outcomes] == ["done"] * 4
    assert all(read_status(r.path) == "done" and calls(r) == 1 for r in runs)
    assert seen[0].remaining == 4 and seen[0].done == 0
    assert (seen[-1].done, seen[-1].running, seen[-1].failed, seen[-1].remaining) == (4, 0, 0, 0)
    assert max(p.running for p in seen) == 2  # two CPUs, one per run
    summary = json.loads((tmp_path / "runs" / "sweep.json").read_text())
    assert [r["status"] for r in summary["runs"]] == ["done"] * 4 and not summary["interrupted"]

    before = {r.name: snapshot(r.path) for r in runs}
    again = run_sweep(runs, FakeRun())
    assert [o.status for o in again.outcomes] == ["skipped"] * 4
    assert {r.name: snapshot(r.path) for r in runs} == before  # not even called
    assert again.stale == ()

    # the grid changed since: refused before anything runs (the old results would be reported as the new grid's)
    with pytest.raises(ConfigError, match=f"4 finished runs do not match .* e.g. {runs[0].name}: optim.epochs 3 -> 5;"):
        run_sweep(make_runs(tmp_path, epochs=5), FakeRun())
    assert {r.name: snapshot(r.path) for r in runs} == before


def test_interrupted_sweep_resumes_without_touching_finished_runs(tmp_path) -> None:
    runs = make_runs(tmp_path, epochs=8)

    def logged(run) -> int:
        return len((run.path / "log.jsonl").read_text().splitlines()) if (run.path / "log.jsonl").exists() else 0

    def stop_mid_run(progress) -> None:  # Ctrl-C once a run is done and another is at most half-way
        if progress.done >= 1 and any(read_status(r.path) == "running" and 1 <= logged(r) <= 4 for r in runs):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(runs, FakeRun(epoch_s=0.3), on_progress=stop_mid_run, poll_s=0.1)
    finished = [r for r in runs if read_status(r.path) == "done"]
    unfinished = [r for r in runs if read_status(r.path) != "done"]
    assert finished and unfinished
    assert any(read_status(r.path) == "running" for r in unfinished)  # stopped mid-run
    assert json.loads((tmp_path / "runs" / "sweep.json").read_text())["interrupted"]
    before = {r.name: snapshot(r.path) for r in finished}

    result = run_sweep(runs, FakeRun())
    assert result.ok
    assert sorted(o.name for o in result.outcomes if o.status == "skipped") == sorted(r.name for r in finished)
    assert all(read_status(r.path) == "done" for r in runs)
    assert {r.name: snapshot(r.path) for r in finished} == before  # untouched
    for run in unfinished:  # resumed: every epoch logged exactly once
        epochs = [json.loads(line)["epoch"] for line in (run.path / "log.jsonl").read_text().splitlines()]
        assert epochs == list(range(1, 9))
    events = [json.loads(line) for line in (tmp_path / "runs" / "sweep-events.jsonl").read_text().splitlines()]
    assert sum(e["event"] == "interrupted" for e in events) >= 1


def test_failed_runs_are_retried_and_reported(tmp_path) -> None:
    runs = make_runs(tmp_path, epochs=1)
    flaky, crashing, broken, misconfigured = (r.name for r in runs)
    fake = FakeRun(fail=(flaky,), crash=(crashing,), always_fail=(broken,), config_error=(misconfigured,))
    result = run_sweep(runs, fake, max_retries=2)
    outcomes = {o.name: o for o in result.outcomes}
    assert not result.ok and sorted(o.name for o in result.failed) == sorted([broken, misconfigured])
    assert outcomes[flaky].status == "done" and outcomes[flaky].attempts == 2
    assert outcomes[crashing].status == "done" and outcomes[crashing].attempts == 2
    assert outcomes[broken].attempts == 3 and "injected failure" in outcomes[broken].error
    assert outcomes[misconfigured].attempts == 1  # a user error fails the same way every time: no retry
    assert outcomes[misconfigured].error == f"ConfigError: data.root: {runs[3].config.data.root} does not exist"
    assert read_status(runs[2].path) == "failed"
    summary = {r["name"]: r for r in json.loads((tmp_path / "runs" / "sweep.json").read_text())["runs"]}
    assert summary[broken]["status"] == "failed" and "injected failure" in summary[broken]["error"]
    events = [json.loads(line) for line in (tmp_path / "runs" / "sweep-events.jsonl").read_text().splitlines()]
    failures = [e for e in events if e["event"] == "failed"]
    assert sorted(e["run"] for e in failures) == sorted([flaky, crashing, broken, broken, broken, misconfigured])
    assert any("Worker" in e["error"] or "died" in e["error"] for e in failures if e["run"] == crashing)

    again = run_sweep(runs, FakeRun(), max_retries=0)  # a new sweep retries what failed before
    assert again.ok and {o.name for o in again.outcomes if o.status == "done"} == {broken, misconfigured}


def test_gpus_per_run_needs_a_gpu_and_bad_resources_are_refused(tmp_path) -> None:
    runs = make_runs(tmp_path)
    if not ray.cluster_resources().get("GPU"):
        with pytest.raises(VispromptError, match=r"--gpus-per-run 0\.5: this machine has no GPU"):
            run_sweep(runs, FakeRun(), gpus_per_run=0.5)
    with pytest.raises(ConfigError, match="must be >= 0"):
        run_sweep(runs, FakeRun(), max_retries=-1)
    assert not any(read_status(r.path) for r in runs)


def test_sweep_command(tmp_path, capsys, monkeypatch) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"name": "cmd", "grid": {"run.seed": [1, 2]}}))
    failing = "testbed-backgrounds/visprompt/sym-0/seed2"
    monkeypatch.setattr(sys.modules[__name__], "fake_run", FakeRun(always_fail=(failing,)), raising=False)
    parser = argparse.ArgumentParser()
    sweep_command.add_parser(parser.add_subparsers())
    argv = ["sweep", str(grid), "--out", str(tmp_path / "runs"), "--set", "optim.epochs=1"]

    dry = parser.parse_args([*argv, "--dry-run"])
    assert dry.func(dry) == 0
    out = capsys.readouterr().out
    assert "pending  testbed-backgrounds/visprompt/sym-0/seed1" in out and "2 runs in" in out

    args = parser.parse_args([*argv, "--max-retries", "0", "--run-fn", f"{__name__}:fake_run"])
    assert args.func(args) == 1  # one run failed
    captured = capsys.readouterr()
    assert "1/2 runs done" in captured.out and "1 failed" in captured.out
    assert f"failed after 1 attempt(s): {failing}: RuntimeError: injected failure" in captured.out
    assert "sweep: done 1/2, running 0, failed 1, remaining 0" in captured.err  # the non-terminal display


def make_folder_dataset(root: Path, size: int = 16) -> Path:
    """FOLDER/{train,test}/<colour>/*.png: noisy squares of three colours (6 train, 3 test images each)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("test", 3)):
        for name, colour in {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 60, 220)}.items():
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(np.array(colour) + rng.normal(0, 30, (size, size, 3)), 0, 255)  # (H, W, 3)
                Image.fromarray(pixels.astype(np.uint8)).save(root / split / name / f"{i}.png")
    return root


def test_end_to_end_sweep_with_the_engine_then_a_report(tmp_path) -> None:
    """Four real runs (tiny random CLIP, fabricated images) through the engine on Ray, then the report."""
    from visprompt.models.tiny import tiny_config
    from visprompt.report import build_report

    arch = tmp_path / "tiny-vit.json"
    arch.write_text(json.dumps(tiny_config("vit")))
    grid = {
        "base": {"data.dataset": "folder", "data.path": str(make_folder_dataset(tmp_path / "images")),
                 "data.shots": 4, "data.augment": False, "backbone.arch": str(arch), "backbone.weights": None,
                 "optim": {"epochs": 2, "batch_size": 4, "eval_batch_size": 8}, "prompt.n_ctx": 4,
                 "run.device": "cpu"},
        "grid": {"method": ["coop", "visprompt"], "noise.rate": [0.25, 0.5]},
    }  # fmt: skip
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    runs = expand_sweep(load_sweep(tmp_path / "grid.yaml", out_dir=tmp_path / "runs"))
    result = run_sweep(runs)
    assert result.ok, [o.error for o in result.outcomes]
    for run in runs:
        assert read_status(run.path) == "done"
        assert {"config.yaml", "split.json", "log.jsonl", "metrics.json", "checkpoint.safetensors"} <= {
            p.name for p in run.path.iterdir()}  # fmt: skip
    splits = {(run.path / "split.json").read_text() for run in runs if run.config.noise.rate == 0.5}
    assert len(splits) == 1  # both methods trained on the same noisy set

    report = build_report(tmp_path / "runs")
    assert report.num_finished == 4
    text = report.markdown.read_text()
    assert "| method | sym 25% | sym 50% |" in text and "| visprompt |" in text and "| coop |" in text
    assert [p.name for p in report.accuracy_plots] == ["accuracy_folder_images.png"]  # a user dataset: its folder
    assert len(report.selection_plots) == 2  # one per noise setting
