"""`visprompt demo` end to end on the shipped testbed CLIP (two methods, one rate, one epoch)."""

from __future__ import annotations

import argparse
import json
import re

import pytest

from visprompt.cli import main
from visprompt.commands import demo
from visprompt.errors import ConfigError


def test_demo_trains_reports_and_skips_on_rerun(tmp_path, capsys) -> None:
    argv = ["demo", "--root", str(tmp_path / "DATA"), "--out", str(tmp_path / "runs"),
            "--methods", "zeroshot", "coop", "--rates", "0.5", "--epochs", "1", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| zeroshot |" in out and "| coop |" in out and "demo finished" in out
    runs = sorted(p for p in (tmp_path / "runs").iterdir() if (p / "metrics.json").is_file())
    assert len(runs) == 2
    top1 = {}
    for run in runs:
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["num_classes"] == 10 and (run / "status").read_text().strip().startswith("done")
        top1[metrics["method"]] = metrics["top1"]
    assert top1["zeroshot"] == 52.7  # the shipped tiny CLIP's zero-shot accuracy on this task (README, model card)
    table = out.replace("**", "")  # the best cell of a column is bold
    assert f"| zeroshot | {top1['zeroshot']:.2f} |" in table and f"| coop | {top1['coop']:.2f} |" in table
    png = tmp_path / "runs" / "report" / "plots" / "accuracy_testbed-backgrounds.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(argv) == 0  # finished runs are skipped, the table is printed again
    assert capsys.readouterr().out.count("(already done)") == 2


def test_demo_progress_names_each_runs_noise_and_a_set_of_a_flags_key_is_refused(tmp_path, capsys) -> None:
    args = argparse.Namespace(task="testbed-backgrounds", root="DATA", shots=16, epochs=30, seed=1, out="runs/demo",
                              device="cpu", overrides=["noise.type=asym"])  # fmt: skip
    # the run's own setting, as the report's table names it (was: "coop at 50% symmetric noise" for asym runs)
    lines = [demo._what(demo.demo_config(args, "coop", rate)) for rate in (0.0, 0.5)]
    assert lines == ["coop on clean labels", "coop at asym 50% noise"]
    # a --set of what a flag sets would replace the flag unseen (was: --set noise.rate=0.25 made every --rates run 25%)
    for override, flag in (("noise.rate=0.25", "--rates"), ("optim.epochs=3", "--epochs"), ("run.seed=2", "--seed"),
                           ("data.dataset=testbed-colours", "--task"), ("optim={epochs: 3}", "--epochs")):  # fmt: skip
        args.overrides = [override]
        key = "optim.epochs" if override.startswith("optim=") else override.partition("=")[0]
        with pytest.raises(ConfigError, match=f"^--set {re.escape(key)}: the demo sets it from {flag}; use {flag}$"):
            demo.demo_config(args, "coop", 0.5)
    args.overrides = ["noise.type=asym", "optim.lr=0.01"]  # the keys no flag sets are the user's
    assert demo.demo_config(args, "coop", 0.5).optim.lr == 0.01
    argv = ["demo", "--root", str(tmp_path / "DATA"), "--out", str(tmp_path / "runs"), "--set", "noise.rate=0.25"]
    assert main(argv) == 2
    assert capsys.readouterr().err == "error: --set noise.rate: the demo sets it from --rates; use --rates\n"
    assert not (tmp_path / "DATA").exists() and not (tmp_path / "runs").exists()  # refused before anything is built
