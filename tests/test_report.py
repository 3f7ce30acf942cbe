"""Reports from a fabricated runs folder: CSV rows, mean ± std over seeds, best marked, valid PNG plots."""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from PIL import Image

from visprompt.commands import report as report_command
from visprompt.config import load_config, to_yaml
from visprompt.errors import VispromptError
from visprompt.report import build_report, collect_runs
from visprompt.report.collect import label_methods
from visprompt.report.plots import accuracy_figure, method_colors, selection_figure
from visprompt.report.tables import summarize

BASE = {"coop": 80.0, "nlprompt": 78.0, "visprompt": 79.0}  # clean accuracy
SLOPE = {"coop": 60.0, "nlprompt": 40.0, "visprompt": 20.0}  # accuracy lost per unit of noise rate
SETTINGS = [("sym", 0.0), ("sym", 0.25), ("sym", 0.5), ("asym", 0.5)]
DATASETS = ["dtd", "eurosat"]


def accuracy(method: str, rate: float, seed: int) -> float:
    return BASE[method] - SLOPE[method] * rate + (-1.0 if seed == 1 else 1.0)


def write_run(root: Path, name: str, overrides: list[str], status: str = "done", metrics: dict | None = None,
              epochs: list[dict] | None = None, error: str | None = None) -> Path:  # fmt: skip
    run_dir = root / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(to_yaml(load_config(overrides=overrides)))
    (run_dir / "status").write_text(status + "\n")
    if metrics is not None:
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
    if epochs:
        (run_dir / "log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in epochs))
    if error:
        (run_dir / "error.txt").write_text(error + "\nTraceback (most recent call last):\n  ...\n")
    return run_dir


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report") / "runs"
    for dataset in DATASETS:
        for method in BASE:
            for noise, rate in SETTINGS:
                for seed in (1, 2):
                    shift = {"coop": None, "nlprompt": 0.0, "visprompt": 0.1}[method]  # coop selects nothing
                    epochs = [{"epoch": e, "loss": 1.0 / e, "lr": 0.002, "timings": {"epoch_s": 0.5}}
                              for e in (1, 2, 3)]  # fmt: skip
                    if shift is not None:
                        for e in epochs:
                            e.update(sel_precision=0.4 + shift + 0.1 * e["epoch"], sel_recall=0.9 - 0.1 * e["epoch"])
                    metrics = {"top1": accuracy(method, rate, seed), "macro_f1": 50.0,
                               "per_class_accuracy": {"a": 1.0, "b": 2.0}, "timings": {"train_s": 3.0}}  # fmt: skip
                    overrides = [f"data.dataset={dataset}", f"method.name={method}", f"noise.type={noise}",
                                 f"noise.rate={rate}", f"run.seed={seed}"]  # fmt: skip
                    write_run(root, f"{dataset}/{method}/{noise}-{rate:g}/seed{seed}", overrides, metrics=metrics,
                              epochs=epochs)  # fmt: skip
    write_run(root, "dtd/coop/sym-0.75/seed1", ["data.dataset=dtd", "method.name=coop", "noise.rate=0.75"],
              status="failed", error="RuntimeError: out of memory")  # fmt: skip
    write_run(root, "dtd/coop/sym-0.75/seed2", ["data.dataset=dtd", "method.name=coop", "noise.rate=0.75",
              "run.seed=2"], status="running", epochs=[{"epoch": 1, "loss": 2.0}])  # fmt: skip
    sweep = {
        "runs": [
            {"name": "dtd/coop/sym-0/seed1", "status": "skipped", "error": None},
            {"name": "dtd/joapr/sym-0/seed1", "status": "failed", "error": "WeightsError: no RN50.pt"},
        ]
    }
    (root / "sweep.json").write_text(json.dumps(sweep))  # a run that failed before writing its directory
    return root


@pytest.fixture(scope="module")
def report(runs_dir):
    return build_report(runs_dir)  # built once: drawing the plots takes most of this module's time


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def tab10_lines_in_png(path: Path, min_pixels: int = 40) -> int:
    """How many of matplotlib's cycle colours appear in the PNG: one per drawn line (bands are translucent).

    C7 (grey) is left out: anti-aliased black text and spines produce it too.
    """
    pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3).astype(int)  # (H*W, 3)
    count = 0
    for i in (0, 1, 2, 3, 4, 5, 6, 8, 9):
        rgb = np.round(np.array(to_rgb(f"C{i}")) * 255).astype(int)
        count += int((np.abs(pixels - rgb).max(axis=1) <= 2).sum() >= min_pixels)
    return count


def test_tables_hold_every_run_and_the_mean_and_std_over_seeds(report) -> None:
    assert report.num_runs == 2 * 3 * 4 * 2 + 2 and report.num_finished == 48
    rows = read_csv(report.runs_csv)
    assert len(rows) == 50
    row = next(r for r in rows if r["run"] == "eurosat/nlprompt/sym-0.25/seed2")
    assert float(row["top1"]) == accuracy("nlprompt", 0.25, 2) and row["noise_type"] == "sym"
    assert (
        row["timings.train_s"] == "3.0"
        and float(row["last.sel_precision"]) == pytest.approx(0.7)
        and row["epochs_logged"] == "3"
    )
    assert "per_class_accuracy.a" not in row
    clean = next(r for r in rows if r["run"] == "dtd/coop/sym-0/seed1")
    assert (clean["noise_type"], float(clean["noise_rate"])) == ("clean", 0.0)
    failed = next(r for r in rows if r["run"] == "dtd/coop/sym-0.75/seed1")
    assert failed["status"] == "failed" and failed["error"] == "RuntimeError: out of memory" and failed["top1"] == ""

    epochs = read_csv(report.epochs_csv)
    assert len(epochs) == 48 * 3 + 1 and {"epoch", "loss", "sel_recall", "timings.epoch_s"} <= set(epochs[0])

    summary = read_csv(report.summary_csv)
    assert len(summary) == 2 * 3 * 4
    for row in summary:
        rate = float(row["noise_rate"])
        assert float(row["top1_mean"]) == pytest.approx(BASE[row["method"]] - SLOPE[row["method"]] * rate)
        assert float(row["top1_std"]) == pytest.approx(math.sqrt(2.0))  # seeds at -1 and +1: sample std
        assert row["n"] == "2" and row["seeds"] == "1 2"


def test_markdown_marks_the_best_mean_per_column(report) -> None:
    text = report.markdown.read_text()
    lines = text.splitlines()
    dtd = lines.index("## dtd")
    assert lines[dtd + 2] == "| method | clean | sym 25% | sym 50% | asym 50% |"
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines[dtd + 4 : dtd + 7]}
    assert rows["coop"].startswith("| coop | **80.00 ± 1.41** | 65.00 ± 1.41 |")  # best clean
    assert "| **74.00 ± 1.41** | **69.00 ± 1.41** | **69.00 ± 1.41** |" in rows["visprompt"]  # best noisy
    assert rows["nlprompt"].count("**") == 0
    assert "## Average over 2 datasets" in text
    assert "| dtd/coop/sym-0.75/seed1 | failed | RuntimeError: out of memory |" in text
    assert "| dtd/coop/sym-0.75/seed2 | running |  |" in text
    assert (
        "| dtd/joapr/sym-0/seed1 | failed | WeightsError: no RN50.pt |" in text and "dtd/coop/sym-0/seed1 |" not in text
    )


def test_plots_are_valid_pngs_with_a_line_per_method(runs_dir, report) -> None:
    assert [p.name for p in report.accuracy_plots] == ["accuracy_dtd.png", "accuracy_eurosat.png"]
    assert len(report.selection_plots) == 2 * 4  # per dataset and noise setting; coop selects nothing
    for path in (*report.accuracy_plots, *report.selection_plots):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(path) as image:
            image.verify()
    assert tab10_lines_in_png(report.accuracy_plots[0]) == 3  # coop, nlprompt, visprompt
    assert tab10_lines_in_png(report.selection_plots[0]) == 2  # nlprompt, visprompt

    records = collect_runs(runs_dir)
    labels = label_methods(records)
    cells = summarize(records, labels, "top1")
    fig = accuracy_figure(cells, "dtd", "top1", method_colors(sorted(BASE)))
    sym, asym = fig.axes[:2]
    assert [line.get_label() for line in sym.get_lines()] == ["coop", "nlprompt", "visprompt"]
    assert len(asym.get_lines()) == 3
    coop = sym.get_lines()[0]
    assert list(coop.get_xdata()) == [0.0, 25.0, 50.0] and list(coop.get_ydata()) == [80.0, 65.0, 50.0]
    assert list(asym.get_lines()[0].get_xdata()) == [0.0, 50.0]  # the clean point starts every panel
    fig = selection_figure(records, labels, "dtd", "sym", 0.5)
    precision, recall = fig.axes[:2]
    assert len(precision.get_lines()) == 2 and len(recall.get_lines()) == 2
    assert np.allclose(precision.get_lines()[0].get_ydata(), [0.5, 0.6, 0.7])  # nlprompt
    assert np.allclose(precision.get_lines()[1].get_ydata(), [0.6, 0.7, 0.8])  # visprompt
    assert selection_figure(records, labels, "dtd", "pairs", 2.0) is None


def test_the_selection_plot_averages_the_finished_runs_only(tmp_path, caplog) -> None:
    """A failed run's one epoch cut nlprompt's line to epoch 1 and pulled it down (0.63, not 0.9)."""
    epochs = [{"epoch": e, "sel_precision": 0.9, "sel_recall": 0.5} for e in range(1, 11)]
    for seed in (1, 2):
        write_run(tmp_path, f"s{seed}", ["method.name=nlprompt", "noise.rate=0.5", f"run.seed={seed}"],
                  metrics={"top1": 60.0}, epochs=epochs)  # fmt: skip
    write_run(tmp_path, "s3", ["method.name=nlprompt", "noise.rate=0.5", "run.seed=3"], status="failed",
              epochs=[{"epoch": 1, "sel_precision": 0.1, "sel_recall": 0.1}])  # fmt: skip
    records = collect_runs(tmp_path)
    with caplog.at_level("INFO", logger="visprompt.report.plots"):
        fig = selection_figure(records, label_methods(records), "testbed-backgrounds", "sym", 0.5)
    line = fig.axes[0].get_lines()[0]
    assert list(line.get_xdata()) == list(range(1, 11)) and np.allclose(line.get_ydata(), 0.9)
    assert "1 unfinished run left out: s3" in caplog.text


def write_ablation(root: Path) -> None:
    for gate in ("learned", "zero"):
        for seed in (1, 2):
            write_run(root, f"visprompt/{gate}/seed{seed}",
                      ["method.name=visprompt", f"prompt.gate={gate}", f"run.seed={seed}", "noise.rate=0.5"],
                      metrics={"top1": 60.0 + seed + (5 if gate == "zero" else 0)})  # fmt: skip
    write_run(root, "coop/seed1", ["method.name=coop", "noise.rate=0.5"], metrics={"top1": 40.0})


def test_ablation_values_join_the_method_label(tmp_path) -> None:
    write_ablation(tmp_path)
    records = collect_runs(tmp_path)
    labels = label_methods(records)
    assert sorted(set(labels.values())) == ["coop", "visprompt[prompt.gate=learned]", "visprompt[prompt.gate=zero]"]
    text = build_report(tmp_path, metric="top1").markdown.read_text()
    assert "| visprompt[prompt.gate=zero] | **66.50 ± 0.71** |" in text
    assert "| coop | 40.00 (n=1) |" in text


def test_a_mean_over_other_seeds_than_its_column_is_marked_with_them(tmp_path) -> None:
    """coop over seeds 1-3 and visprompt over seeds 4-6 had the same n: no mark, and visprompt's mean in bold as the
    best though each seed draws its own shots and noisy labels. Each now says its seeds; the average over datasets
    too; a column whose cells share their seeds is as before."""
    for dataset in ("dtd", "eurosat"):
        for method, seeds in (("coop", (1, 2, 3)), ("visprompt", (4, 5, 6)), ("nlprompt", (1, 2, 3))):
            for seed in seeds:
                write_run(tmp_path, f"{dataset}/{method}/seed{seed}", [f"data.dataset={dataset}", f"run.seed={seed}",
                          f"method.name={method}", "noise.rate=0.5"], metrics={"top1": 60.0 + seed})  # fmt: skip
        for method in ("coop", "nlprompt"):  # clean: the same seeds for both
            for seed in (1, 2, 3):
                write_run(tmp_path, f"{dataset}/{method}-clean/seed{seed}", [f"data.dataset={dataset}",
                          f"run.seed={seed}", f"method.name={method}"], metrics={"top1": 70.0 + seed})  # fmt: skip
    text = build_report(tmp_path).markdown.read_text()
    dtd = text[text.index("## dtd") : text.index("## eurosat")]
    assert "| coop | **72.00 ± 1.00** | 62.00 ± 1.00 |" in dtd  # seeds 1-3 are the column's most common
    assert "| visprompt |  | **65.00 ± 1.00** (seeds 4-6) |" in dtd
    assert "(seeds ...) marks a mean over other seeds than its column's other cells" in dtd
    average = text[text.index("## Average") :]
    assert "| visprompt |  | **65.00** (seeds 4-6) |" in average and "| nlprompt | **72.00** | 62.00 |" in average

    write_run(tmp_path / "two", "coop/seed1", ["method.name=coop", "noise.rate=0.5"], metrics={"top1": 40.0})
    write_run(tmp_path / "two", "vp/seed2", ["method.name=visprompt", "noise.rate=0.5", "run.seed=2"],
              metrics={"top1": 50.0})  # fmt: skip
    text = build_report(tmp_path / "two").markdown.read_text()  # an even split: both cells marked
    assert "| coop | 40.00 (seed 1) |" in text and "| visprompt | **50.00** (seed 2) |" in text


def test_open_set_runs_with_different_held_out_classes_are_separate_settings(tmp_path) -> None:
    for k, top1 in ((1, 70.0), (2, 60.0)):
        write_run(tmp_path, f"k{k}", ["noise.type=open-set", "noise.rate=0.25", f"noise.open_set_classes={k}"],
                  metrics={"top1": top1})  # fmt: skip
    text = build_report(tmp_path).markdown.read_text()
    assert "| open-set-k1 25% | open-set-k2 25% |" in text and "| **70.00** | **60.00** |" in text


def test_a_dataset_alias_in_an_older_runs_config_is_its_registered_name(tmp_path) -> None:
    """Runs written before configs resolved aliases: `DescribableTextures` and `dtd` made two tables (one seed each)
    and the average over datasets counted DTD twice. A csv dataset keeps its path in the name."""
    for seed, dataset in ((1, "dtd"), (2, "DescribableTextures")):
        run = write_run(tmp_path, f"{dataset}/seed{seed}", ["method.name=coop", f"run.seed={seed}"],
                        metrics={"top1": 60.0 + seed})  # fmt: skip
        config = run / "config.yaml"
        config.write_text(config.read_text().replace("dataset: testbed-backgrounds", f"dataset: {dataset}"))
    run = write_run(tmp_path, "mine", ["data.dataset=csv", "data.path=birds.csv", "method.name=coop"],
                    metrics={"top1": 50.0})  # fmt: skip
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("dataset: csv", "dataset: CSV"))
    assert sorted(r.dataset for r in collect_runs(tmp_path)) == ["csv:birds.csv", "dtd", "dtd"]
    text = build_report(tmp_path).markdown.read_text()
    assert "DescribableTextures" not in text and "61.50 ± 0.71" in text and "## Average over 2 datasets" in text


def test_nested_metric_keys_are_found(tmp_path) -> None:
    write_run(tmp_path, "a", ["noise.rate=0.5"], metrics={"test": {"top1": 70.0}, "val": {"top1": 10.0}})
    rows = read_csv(build_report(tmp_path).runs_csv)
    assert float(rows[0]["top1"]) == 70.0


def test_errors(tmp_path) -> None:
    with pytest.raises(VispromptError, match="does not exist"):
        build_report(tmp_path / "missing")
    with pytest.raises(VispromptError, match="no run directories"):
        build_report(tmp_path)
    write_run(tmp_path, "a", [], metrics={"top1": 1.0})
    with pytest.raises(VispromptError, match="metric 'acc' is in none"):
        build_report(tmp_path, metric="acc")


def test_runs_left_out_of_the_means_are_listed(tmp_path) -> None:
    """A finished run whose top1 is NaN, and a run whose config.yaml or metrics.json cannot be read, were left out
    of the means with no word in results.md (the cell's mean was over the other seeds)."""
    for seed in (1, 2):
        write_run(tmp_path, f"coop/seed{seed}", ["method.name=coop", f"run.seed={seed}"], metrics={"top1": 60.0 + seed})
    nan = write_run(tmp_path, "coop/seed3", ["method.name=coop", "run.seed=3"], metrics={"top1": 0.0})
    (nan / "metrics.json").write_text('{"top1": NaN}')
    write_run(tmp_path, "coop/seed4", ["method.name=coop", "run.seed=4"], metrics={"macro_f1": 1.0})  # no top1
    broken = write_run(tmp_path, "coop/seed5", ["method.name=coop", "run.seed=5"], metrics={"top1": 90.0})
    (broken / "config.yaml").write_text("data: [unclosed\n")
    torn = write_run(tmp_path, "coop/seed6", ["method.name=coop", "run.seed=6"], metrics={"top1": 90.0})
    (torn / "metrics.json").write_text('{"top1": 9')
    text = build_report(tmp_path).markdown.read_text()
    assert "| coop | **61.50 ± 0.71** |" in text
    assert "## Runs left out of the tables" in text and "| coop/seed3 | top1 is nan in metrics.json |" in text
    assert "| coop/seed4 | no top1 in metrics.json |" in text
    assert "| coop/seed5 | config.yaml: expected ',' or ']', but got '<stream end>' (line 2, column 1) |" in text
    assert "| coop/seed6 | metrics.json: Expecting " in text
    for run in ("seed3", "seed4", "seed5", "seed6"):
        shutil.rmtree(tmp_path / "coop" / run)
    assert "left out" not in build_report(tmp_path).markdown.read_text()
    (tmp_path / "coop" / "seed1" / "config.yaml").write_text("[")
    (tmp_path / "coop" / "seed2" / "config.yaml").write_text("[")
    with pytest.raises(VispromptError, match=r"no readable run directories under .*: 2 could not be read"):
        build_report(tmp_path)


def test_report_command_prints_the_files(tmp_path, capsys) -> None:
    write_ablation(tmp_path / "runs")
    parser = argparse.ArgumentParser()
    report_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "rep")])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("5 runs, 5 finished; report in")
    assert str(tmp_path / "rep" / "results.md") in out and "accuracy_testbed-backgrounds.png" in out


def test_an_option_missing_from_an_older_runs_config_counts_as_its_default(tmp_path) -> None:
    """A run written before an option existed and one written after, with the default, are the same method."""
    for seed in (1, 2):
        write_run(
            tmp_path, f"old/seed{seed}", ["method.name=visprompt-plus", f"run.seed={seed}"], metrics={"top1": 60.0}
        )
    old = tmp_path / "old" / "seed1" / "config.yaml"
    old.write_text(old.read_text().replace("  noisy_target: given\n", ""))  # as an earlier version wrote it
    assert "noisy_target" not in old.read_text()
    write_run(tmp_path, "new/seed1", ["method.name=visprompt-plus", "run.seed=1"], metrics={"top1": 61.0})
    assert set(label_methods(collect_runs(tmp_path)).values()) == {"visprompt-plus"}
    write_run(
        tmp_path,
        "zs/seed1",
        ["method.name=visprompt-plus", "method.noisy_target=zeroshot", "method.relabel=false"],  # relabelling: off
        metrics={"top1": 1.0},
    )  # fmt: skip
    labels = label_methods(collect_runs(tmp_path))
    relabel = "method.relabel=True,method.relabel_by=posterior,method.relabel_max_kept=0.3"  # the recipe's
    assert labels["old/seed1"] == f"visprompt-plus[method.noisy_target=given,{relabel}]"  # the default, filled in
    no_relabel = "method.relabel=False,method.relabel_by=model,method.relabel_max_kept=1.0"
    assert labels["zs/seed1"] == f"visprompt-plus[method.noisy_target=zeroshot,{no_relabel}]"


def test_an_option_a_recipe_turned_on_since_tells_the_older_runs_apart(tmp_path) -> None:
    """visprompt-plus's recipe sets method.q_schedule=noise; a run written before the option existed trained with
    a fixed q, so it is read with the option's default and labelled apart, in the report and when it is loaded."""
    from visprompt.config import load_run_config

    write_run(tmp_path, "new/seed1", ["method.name=visprompt-plus", "run.seed=1"], metrics={"top1": 61.0})
    write_run(tmp_path, "old/seed1", ["method.name=visprompt-plus", "run.seed=1"], metrics={"top1": 60.0})
    old = tmp_path / "old" / "seed1" / "config.yaml"
    old.write_text(old.read_text().replace("  q_schedule: noise\n", ""))  # as an earlier version wrote it
    assert "q_schedule" not in old.read_text()
    assert load_run_config(old).method.q_schedule == "fixed"  # not the recipe's "noise"
    assert load_run_config(tmp_path / "new" / "seed1" / "config.yaml").method.q_schedule == "noise"
    labels = label_methods(collect_runs(tmp_path))
    assert labels["old/seed1"] == "visprompt-plus[method.q_schedule=fixed]"
    assert labels["new/seed1"] == "visprompt-plus[method.q_schedule=noise]"


def test_a_schedule_that_nothing_ran_does_not_label_zero_shot_runs_apart(tmp_path) -> None:
    """Zero-shot CLIP trains nothing: two of its runs whose config.yaml (written before its training fields were held)
    say 1 and 2 epochs are one method, not zeroshot[optim.epochs=1] and zeroshot[optim.epochs=2] with equal numbers."""
    for epochs in (1, 2):
        run = write_run(tmp_path, f"e{epochs}/seed1", ["method.name=zeroshot"], metrics={"top1": 52.7})
        config = run / "config.yaml"  # as an earlier version wrote it
        config.write_text(config.read_text().replace("epochs: 100", f"epochs: {epochs}").replace("augment: true",
                          f"augment: {str(epochs == 1).lower()}"))  # fmt: skip
        assert f"epochs: {epochs}" in config.read_text()
    write_run(tmp_path, "e3/seed1", ["method.name=coop", "optim.epochs=3"], metrics={"top1": 60.0})
    write_run(tmp_path, "e4/seed1", ["method.name=coop", "optim.epochs=4"], metrics={"top1": 61.0})
    labels = label_methods(collect_runs(tmp_path))
    assert labels["e1/seed1"] == labels["e2/seed1"] == "zeroshot"
    assert labels["e3/seed1"] == "coop[optim.epochs=3]"  # a method that trains: its runs are told apart


def test_methods_of_one_table_run_under_different_protocols_are_labelled_with_them(tmp_path) -> None:
    """CoOp at 16 shots and 50 epochs beside VisPrompt at 1 shot and 5 epochs were "coop" and "visprompt" in one
    table: the settings they differ in join both labels, in that dataset's table only. Zero-shot trains nothing (its
    epochs are no difference) and CoCoOp's recipe sets its own epochs (10: no difference either)."""
    for seed in (1, 2):
        write_run(tmp_path, f"dtd/coop/seed{seed}", ["data.dataset=dtd", "method.name=coop", "data.shots=16",
                  "optim.epochs=50", f"run.seed={seed}"], metrics={"top1": 60.0 + seed})  # fmt: skip
        write_run(tmp_path, f"dtd/vp/seed{seed}", ["data.dataset=dtd", "method.name=visprompt", "data.shots=1",
                  "optim.epochs=5", f"run.seed={seed}"], metrics={"top1": 50.0 + seed})  # fmt: skip
        write_run(tmp_path, f"dtd/zs/seed{seed}", ["data.dataset=dtd", "method.name=zeroshot", "data.shots=16",
                  f"run.seed={seed}"], metrics={"top1": 40.0})  # fmt: skip
        for method in ("coop", "cocoop"):  # one protocol on eurosat (CoCoOp at its recipe's epochs): bare names
            epochs = [] if method == "cocoop" else ["optim.epochs=50"]
            write_run(tmp_path, f"eurosat/{method}/seed{seed}", ["data.dataset=eurosat", f"method.name={method}",
                      *epochs, f"run.seed={seed}"], metrics={"top1": 70.0})  # fmt: skip
    labels = label_methods(collect_runs(tmp_path))
    assert labels["dtd/coop/seed1"] == "coop[data.shots=16,optim.epochs=50]"
    assert labels["dtd/vp/seed1"] == "visprompt[data.shots=1,optim.epochs=5]"
    assert labels["dtd/zs/seed1"] == "zeroshot[data.shots=16]"  # its shots are a setting; its epochs held
    assert (labels["eurosat/coop/seed1"], labels["eurosat/cocoop/seed1"]) == ("coop", "cocoop")
    text = build_report(tmp_path).markdown.read_text()
    assert "| coop[data.shots=16,optim.epochs=50] | **61.50 ± 0.71** |" in text
    assert "| visprompt[data.shots=1,optim.epochs=5] | 51.50 ± 0.71 |" in text


def test_the_report_names_the_environments_its_runs_were_computed_in(tmp_path) -> None:
    """A seed's run repeats to the last digit only in one environment, so a report says which it had, and lists
    them, with their run counts, when the runs come from several."""
    here = {"cpu": "AMD EPYC (family 25, model 17)", "compute": "cpu threads=1 isa=AVX512"}
    there = {"cpu": "Intel Xeon (family 6, model 85)", "compute": "cpu threads=1 isa=AVX2"}
    for seed in (1, 2):
        metrics = {"top1": 70.0 + seed, "environment": here, "versions": {"torch": "2.14.1"}}
        write_run(tmp_path / "runs", f"a/seed{seed}", [f"run.seed={seed}"], metrics=metrics)
    one = build_report(tmp_path / "runs", tmp_path / "one").markdown.read_text()
    assert "Computed in one environment: AMD EPYC (family 25, model 17), cpu threads=1 isa=AVX512, torch 2.14.1." in one
    assert "## Environments" not in one

    write_run(tmp_path / "runs", "a/seed3", ["run.seed=3"], metrics={"top1": 73.0, "environment": there,
                                                                    "versions": {"torch": "2.14.1"}})  # fmt: skip
    write_run(tmp_path / "runs", "a/seed4", ["run.seed=4"], metrics={"top1": 74.0})  # before it was recorded
    write_run(tmp_path / "runs", "a/seed5", ["run.seed=5"], status="failed")  # not finished: not counted
    several = build_report(tmp_path / "runs", tmp_path / "several").markdown.read_text()
    assert "## Environments" in several and "computed in 2 known environments (1 run did not record" in several
    assert "| AMD EPYC (family 25, model 17), cpu threads=1 isa=AVX512, torch 2.14.1 | 2 |" in several
    assert "| Intel Xeon (family 6, model 85), cpu threads=1 isa=AVX2, torch 2.14.1 | 1 |" in several
    assert "| not recorded (a run made before visprompt recorded its processor) | 1 |" in several
    rows = {r["run"]: r for r in read_csv(tmp_path / "several" / "runs.csv")}
    write_run(tmp_path / "old", "a/seed1", [], metrics={"top1": 1.0})  # only runs that recorded nothing
    old = build_report(tmp_path / "old", tmp_path / "old-report").markdown.read_text()
    assert "Environment not recorded" in old and "Computed in one environment" not in old
    assert rows["a/seed3"]["environment.compute"] == "cpu threads=1 isa=AVX2"  # per run, in the CSV too
    assert "versions of the code" not in several  # none recorded a commit or version: nothing to name


def test_the_report_names_the_code_versions_when_its_runs_were_made_by_several(tmp_path) -> None:
    """A fix inside a method changes its numbers but not its label: a folder filled over several commits says so."""
    for seed, sha in ((1, "a" * 40), (2, "a" * 40), (3, "b" * 40 + "+dirty")):
        write_run(tmp_path / "runs", f"a/seed{seed}", [f"run.seed={seed}"], metrics={"top1": 70.0, "git_sha": sha})
    write_run(tmp_path / "runs", "a/seed4", ["run.seed=4"], metrics={"top1": 70.0, "versions": {"visprompt": "0.3"}})
    text = build_report(tmp_path / "runs", tmp_path / "out").markdown.read_text()
    assert ("Made by 3 versions of the code: commit aaaaaaaaaaaa (2 runs), commit bbbbbbbbbbbb+dirty (1 run), "
            "visprompt 0.3 (1 run).") in text  # fmt: skip
    write_run(tmp_path / "one", "a/seed1", [], metrics={"top1": 70.0, "git_sha": "a" * 40})
    assert "versions of the code" not in build_report(tmp_path / "one", tmp_path / "out1").markdown.read_text()


def _paired_run(root: Path, name: str, method: str, seed: int, top1: float, shots: int = 16, env: str = "a") -> None:
    overrides = [f"method.name={method}", "noise.rate=0.5", f"run.seed={seed}", f"data.shots={shots}"]
    metrics = {"top1": top1, "environment": {"cpu": f"cpu-{env}", "compute": "cpu threads=1"}}
    run = write_run(root, name, overrides, metrics=metrics)
    split = {"classnames": ["a", "b"], "train": {"path": [f"s{seed}-{i}.png" for i in range(shots)]},
             "val": {}, "test": {"path": ["t.png"]}, "root": str(root)}  # fmt: skip
    (run / "split.json").write_text(json.dumps(split))


def test_report_compares_two_methods_paired_over_the_seeds_that_saw_the_same_data(tmp_path) -> None:
    """`--compare A:B`: A - B per setting over the seeds both ran, with a t-interval and wins; runs that share a
    seed but not their samples are not a pair, so the comparison is refused before any file is written."""
    for seed, (a, b) in enumerate([(56.0, 50.0), (58.0, 60.0), (61.0, 60.0)], 1):
        _paired_run(tmp_path / "runs", f"plus/seed{seed}", "visprompt-plus", seed, a, env="b" if seed == 3 else "a")
        _paired_run(tmp_path / "runs", f"coop/seed{seed}", "coop", seed, b)
    _paired_run(tmp_path / "runs", "coop/seed4", "coop", 4, 10.0)  # no visprompt-plus run on seed 4: not a pair
    args = argparse.Namespace(runs_dir=str(tmp_path / "runs"), out=str(tmp_path / "out"), metric="top1",
                              lower_is_better=False, compare=["visprompt-plus:coop"])  # fmt: skip
    assert report_command.run(args) == 0
    text = (tmp_path / "out" / "results.md").read_text()
    # diffs +6, -2, +1: mean +1.67, t(0.975, 2) x 4.041 / sqrt(3) = 10.04; seed 3's runs are from two environments
    row = "| sym 50% | 3 | 58.33 | 56.67 | +1.67 [-8.37, +11.71] 2/3 (1 across environments) |"
    assert "### visprompt-plus - coop" in text and row in text
    assert "| all | all settings | 3 |" in text and "1 pair above pair runs computed in different environments" in text
    rows = read_csv(tmp_path / "out" / "paired.csv")
    assert [(r["dataset"], r["pairs"], r["better"], r["won_by_a"], r["won_by_b"]) for r in rows] == [
        ("testbed-backgrounds", "3", "higher", "2", "1"),
        ("all", "3", "higher", "2", "1"),
    ]

    args.lower_is_better, args.out = True, str(tmp_path / "lower")  # a pair is won by the lower value then
    report_command.run(args)
    assert "| +1.67 [-8.37, +11.71] 1/3 (1 across environments) |" in (tmp_path / "lower" / "results.md").read_text()
    row = read_csv(tmp_path / "lower" / "paired.csv")[0]  # the CSV counts wins as the Markdown does
    assert (row["better"], row["won_by_a"], row["won_by_b"]) == ("lower", "1", "2")

    for bad, message in [
        ("visprompt-plus", "expected A:B"),
        ("visprompt-plus:cop", "no finished runs of method 'cop'; closest: coop"),
        ("coop:coop", "compared with itself"),
    ]:
        with pytest.raises(VispromptError, match=message):
            build_report(tmp_path / "runs", tmp_path / "bad", compare=[bad])
    # every coop run at 8 shots, every visprompt-plus run at 16: labelled apart by their shots, and still no pair
    _paired_run(tmp_path / "other", "plus/seed1", "visprompt-plus", 1, 60.0)
    _paired_run(tmp_path / "other", "coop/seed1", "coop", 1, 40.0, shots=8)
    with pytest.raises(VispromptError, match=r"no finished runs of method 'visprompt-plus'; closest: visprompt-plus\["):
        build_report(tmp_path / "other", tmp_path / "bad", compare=["visprompt-plus:coop"])
    with pytest.raises(VispromptError, match="share dataset, noise and seed but not their training"):
        build_report(tmp_path / "other", tmp_path / "bad",
                     compare=["visprompt-plus[data.shots=16]:coop[data.shots=8]"])  # fmt: skip
    # one config, other samples (the data root's images changed between the two runs): the split files tell
    _paired_run(tmp_path / "moved", "plus/seed1", "visprompt-plus", 1, 60.0)
    _paired_run(tmp_path / "moved", "coop/seed1", "coop", 1, 40.0)
    split = tmp_path / "moved" / "coop" / "seed1" / "split.json"
    split.write_text(split.read_text().replace("s1-0.png", "other.png"))
    with pytest.raises(VispromptError, match="share dataset, noise and seed but not their training"):
        build_report(tmp_path / "moved", tmp_path / "bad", compare=["visprompt-plus:coop"])
    assert not (tmp_path / "bad").exists()  # refused before anything was written
    _paired_run(tmp_path / "moved", "coop-copy/seed1", "coop", 1, 41.0)  # a second coop run of seed 1
    with pytest.raises(VispromptError, match="runs coop/seed1 and coop-copy/seed1 are both coop on"):
        build_report(tmp_path / "moved", tmp_path / "bad", compare=["visprompt-plus:coop"])


def test_two_user_datasets_are_two_tables_and_runs_csv_keeps_each_runs_label(tmp_path) -> None:
    """Two CSV datasets are both ``data.dataset=csv``: the report names each with its path rather than averaging
    them as seeds of one dataset; and metrics.json's own run, method and dataset do not replace the row's."""
    for path, top1 in (("data/birds.csv", 90.0), ("data/cars.csv", 40.0)):
        for seed in (1, 2):
            overrides = ["method.name=coop", "data.dataset=csv", f"data.path={path}", f"run.seed={seed}"]
            metrics = {"top1": top1 + seed, "run": f"seed{seed}", "method": "coop", "dataset": "csv"}
            write_run(tmp_path / "runs", f"{Path(path).stem}/coop/seed{seed}", overrides, metrics=metrics)
    for gate, top1 in (("zero", 50.0), ("learned", 61.0)):
        metrics = {"top1": top1, "run": "seed1", "method": "visprompt", "dataset": "testbed-backgrounds"}
        overrides = ["method.name=visprompt", f"prompt.gate={gate}"]
        write_run(tmp_path / "runs", f"gate-{gate}/seed1", overrides, metrics=metrics)
    report = build_report(tmp_path / "runs", tmp_path / "out")
    summary = {(r["dataset"], r["method"]): r for r in read_csv(report.summary_csv)}
    assert summary[("csv:data/birds.csv", "coop")]["top1_mean"] == "91.5"
    assert summary[("csv:data/cars.csv", "coop")]["top1_mean"] == "41.5"
    assert summary[("csv:data/cars.csv", "coop")]["seeds"] == "1 2"
    rows = {r["run"]: r for r in read_csv(report.runs_csv)}
    assert rows["birds/coop/seed1"]["dataset"] == "csv:data/birds.csv"
    from visprompt.report import _plot_names  # a plot's file name: the file's stem, numbered apart when shared

    plots = _plot_names(["csv:data/birds.csv", "csv:old/birds.csv", "testbed-many", "folder:/x/images"])
    assert plots == {"csv:data/birds.csv": "csv_birds", "csv:old/birds.csv": "csv_birds-2",
                     "testbed-many": "testbed-many", "folder:/x/images": "folder_images"}  # fmt: skip
    assert rows["gate-zero/seed1"]["method"] == "visprompt[prompt.gate=zero]"  # not metrics.json's bare "visprompt"
    assert rows["gate-learned/seed1"]["method"] == "visprompt[prompt.gate=learned]"
    copy = ["method.name=coop", "data.dataset=csv", "data.path=data/cars.csv"]
    write_run(tmp_path / "runs", "copy/coop/seed1", copy, metrics={"top1": 10.0})
    with pytest.raises(VispromptError, match="runs cars/coop/seed1 and copy/coop/seed1 are both coop on csv:data/cars"):
        build_report(tmp_path / "runs", tmp_path / "dup")  # a seed counts once, with or without --compare


def test_a_report_written_again_leaves_no_file_of_the_earlier_one_it_did_not_write(tmp_path) -> None:
    """A paired.csv from an earlier --compare, or the plots of runs since moved out, would read as this report's."""
    for seed in (1, 2):
        for method, rate in (("coop", 0.5), ("coop", 0.25), ("nlprompt", 0.5), ("nlprompt", 0.25)):
            run = write_run(tmp_path / "runs", f"{method}/{rate}/seed{seed}",
                            [f"method.name={method}", f"noise.rate={rate}", f"run.seed={seed}"],
                            metrics={"top1": 50.0 + seed + rate},
                            epochs=[{"epoch": 1, "sel_precision": 0.9, "sel_recall": 0.5}])  # fmt: skip
            split = {"classnames": ["a"], "train": {"path": [f"{seed}-{rate}.png"]}, "val": {}, "test": {}}
            (run / "split.json").write_text(json.dumps(split))
    first = build_report(tmp_path / "runs", compare=["nlprompt:coop"])
    assert first.paired_csv is not None and len(first.selection_plots) == 2
    (first.out_dir / "notes.txt").write_text("mine")  # not the report's: stays
    shutil.rmtree(tmp_path / "runs" / "coop" / "0.25")
    shutil.rmtree(tmp_path / "runs" / "nlprompt" / "0.25")
    second = build_report(tmp_path / "runs")
    assert not (second.out_dir / "paired.csv").exists()
    assert sorted(p.name for p in (second.out_dir / "plots").iterdir()) == sorted(
        p.name for p in (*second.accuracy_plots, *second.selection_plots)
    )
    assert len(second.selection_plots) == 1 and (second.out_dir / "notes.txt").read_text() == "mine"
