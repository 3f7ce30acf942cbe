"""``visprompt train | eval | predict`` through ``cli.main``: outputs, resume, one-line errors."""

from __future__ import annotations

import json
import logging

import pytest

import visprompt.cli as cli
from test_engine_runs import COLOURS, world  # noqa: F401  (the module-scoped fixture)
from visprompt.engine.progress import progress


def _train_args(world, out, *extra: str) -> list[str]:  # noqa: F811
    return [
        "train", "--dataset", "folder", "--set", f"data.path={world['data']}", "--backbone", str(world["arch"]),
        "--weights", "none", "--method", "coop", "--shots", "4", "--noise", "sym", "--rate", "0.25", "--epochs", "2",
        "--seed", "3", "--out", str(out), "--name", "cli", "--device", "cpu", "--no-progress",
        "--set", "optim.batch_size=4", "--set", "prompt.n_ctx=4", "--set", "data.augment=false", *extra,
    ]  # fmt: skip


def test_train_eval_predict(world, tmp_path, capsys) -> None:  # noqa: F811
    assert cli.main(_train_args(world, tmp_path)) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path / 'cli'}: done" in out and "top-1" in out
    metrics = json.loads((tmp_path / "cli" / "metrics.json").read_text())

    assert cli.main(["eval", str(tmp_path / "cli"), "--device", "cpu", "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["top1"] == pytest.approx(metrics["top1"]) and evaluated["num_samples"] == metrics["num_test"]

    moved = tmp_path / "moved"
    (world["data"]).rename(moved)  # the data moves: --data points eval at the new place
    try:
        assert cli.main(["eval", str(tmp_path / "cli"), "--device", "cpu"]) == 2
        assert "does not exist" in capsys.readouterr().err
        assert cli.main(["eval", str(tmp_path / "cli"), "--device", "cpu", "--data", str(moved)]) == 0
        assert f"top-1     {metrics['top1']:6.2f}%" in capsys.readouterr().out
    finally:
        moved.rename(world["data"])

    images = [str(world["data"] / "test" / name / "0.png") for name in COLOURS]
    assert cli.main(["predict", str(tmp_path / "cli"), *images, "--json", "--device", "cpu"]) == 0
    predictions = json.loads(capsys.readouterr().out)
    assert [p["image"] for p in predictions] == images
    for p in predictions:
        assert set(p["probabilities"]) == set(COLOURS) and sum(p["probabilities"].values()) == pytest.approx(1.0)
        assert p["label"] == max(p["probabilities"], key=p["probabilities"].get)
    assert cli.main(["predict", str(tmp_path / "cli"), *images, "--top", "2", "--device", "cpu"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:2] == ["image", "label"] and len(table) == 1 + len(images)


def test_train_resumes_after_a_simulated_kill(world, tmp_path, capsys, monkeypatch) -> None:  # noqa: F811
    from visprompt.engine import runner

    class Killed(RuntimeError):
        pass

    def killed_after_epoch_1(epoch: int, record: dict) -> None:
        if epoch == 1:
            raise Killed("as if the process had been killed after epoch 1")

    real = runner.train_run
    monkeypatch.setattr(runner, "train_run", lambda cfg, **kw: real(cfg, **kw, on_epoch_end=killed_after_epoch_1))
    with pytest.raises(Killed):
        cli.main(_train_args(world, tmp_path))
    assert (tmp_path / "cli" / "status").read_text().strip() == "failed"
    monkeypatch.setattr(runner, "train_run", real)
    assert cli.main(_train_args(world, tmp_path)) == 0
    assert "resumed after epoch 1" in capsys.readouterr().out
    assert cli.main(_train_args(world, tmp_path)) == 0
    assert "already done, skipped" in capsys.readouterr().out


def test_missing_weights_is_one_line(world, tmp_path, capsys) -> None:  # noqa: F811
    args = _train_args(world, tmp_path)
    args[args.index("--backbone") + 1] = "RN50"
    args[args.index("--weights") + 1] = "openai"
    assert cli.main([*args, "--set", f"backbone.cache_dir={tmp_path / 'empty-cache'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "RN50" in err and "Traceback" not in err
    assert not (tmp_path / "cli").exists()  # a setup error leaves no run directory behind

    args[args.index("--weights") + 1] = str(tmp_path / "RN50.pt")
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RN50.pt does not exist" in err


def test_eval_of_a_folder_that_is_no_run(tmp_path, capsys) -> None:
    assert cli.main(["eval", str(tmp_path)]) == 2
    assert "is not a run directory" in capsys.readouterr().err


def test_progress_falls_back_to_log_lines(caplog) -> None:
    with caplog.at_level(logging.INFO, logger="visprompt.engine.progress"):
        assert list(progress(range(3), desc="epochs", total=3, enabled=False, every=0.0)) == [0, 1, 2]
    assert [r.getMessage() for r in caplog.records] == ["epochs 1/3", "epochs 2/3", "epochs 3/3"]


def test_sigterm_stops_a_training_run_like_ctrl_c(world, tmp_path) -> None:  # noqa: F811
    """`kill PID` (SIGTERM) is how a background job is stopped: the run ends "interrupted", its lock is released
    and the same command resumes it; nothing is left marked as done."""
    import os
    import signal
    import subprocess
    import sys
    import time

    args = _train_args(world, tmp_path, "--epochs", "400")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "visprompt.cli", *args], env=env, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "cli" / "log.jsonl"
    deadline = time.monotonic() + 90
    while not (log.exists() and log.read_text().strip()) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read()  # still training when the signal comes
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip().endswith("interrupted")
    assert (tmp_path / "cli" / "status").read_text().strip() != "done"
    assert not (tmp_path / "cli" / "metrics.json").exists()
