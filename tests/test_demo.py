"""`visprompt demo` end to end on the shipped testbed CLIP (two methods, one rate, one epoch)."""

from __future__ import annotations

import json

from visprompt.cli import main


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
