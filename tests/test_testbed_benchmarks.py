"""The testbed benchmark scripts' tables: paired ablation differences and the clean-set selection summary."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import compare_folders  # noqa: E402
import testbed_ablations  # noqa: E402
import testbed_robustness  # noqa: E402

from visprompt.config import load_config, parse_override  # noqa: E402
from visprompt.report import collect_runs  # noqa: E402
from visprompt.report.paired import paired  # noqa: E402

HERE = {
    "environment": {"cpu": "AMD EPYC (family 25, model 17)", "compute": "cpu threads=1 isa=AVX512"},
    "versions": {"torch": "2.14.1"},
}
THERE = {
    "environment": {"cpu": "Intel Xeon (family 6, model 85)", "compute": "cpu threads=1 isa=AVX2"},
    "versions": {"torch": "2.14.1"},
}


def fake_run(
    root: Path, name: str, method: str, noise: str, rate: float, seed: int, top1: float, last=None, metrics=None
) -> None:
    run = root / name
    run.mkdir(parents=True)
    cfg = {"data": {"dataset": "testbed-colours"}, "method": {"name": method},
           "noise": {"type": noise, "rate": rate}, "run": {"seed": seed}}  # fmt: skip
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run / "status").write_text("done\n")
    (run / "metrics.json").write_text(json.dumps({"top1": top1, **(metrics or {})}))
    if last is not None:
        (run / "log.jsonl").write_text(json.dumps({"epoch": 1, **last}) + "\n")


def test_ablation_table_pairs_each_variant_with_the_defaults_by_task_setting_and_seed(tmp_path) -> None:
    for seed, (base, variant) in enumerate([(50.0, 56.0), (60.0, 58.0)], 1):
        fake_run(tmp_path, f"defaults/c/sym-0.75/seed{seed}", "visprompt", "sym", 0.75, seed, base)
        fake_run(tmp_path, f"no-noisy-loss/c/sym-0.75/seed{seed}", "visprompt", "sym", 0.75, seed, variant)
    fake_run(tmp_path, "mae-noisy/c/sym-0.75/seed1", "visprompt", "sym", 0.75, 1, 70.0)  # seed 2 missing
    text = testbed_ablations.ablation_tables(
        tmp_path, ["defaults", "no-noisy-loss", "mae-noisy"], ["testbed-colours"], [("sym", 0.75)], [1, 2]
    )
    summary, per_task = text.split("Per task")
    rows = {line.split(" | ")[0].strip("| "): line for line in summary.splitlines() if line.startswith("| ")}
    assert rows["defaults"].endswith("| 55.0 |")
    assert rows["no-noisy-loss"].endswith("| 57.0 (+2.0, 1/2) |")  # +6 and -2: mean +2, one pair won
    assert rows["mae-noisy"].endswith("| 1/2 runs |")  # an incomplete cell says so instead of a biased mean
    assert "| defaults | 55.0 +- 7.1 |" in per_task  # per-task mean +- sample std over seeds


def test_the_per_task_table_says_how_many_seeds_a_mean_has_and_gives_no_spread_of_one(tmp_path) -> None:
    """A cell of one finished seed out of three read "70.0 +- 0.0", as if three had agreed."""
    for seed, top1 in ((1, 70.0), (2, 60.0), (3, 50.0)):
        fake_run(tmp_path, f"defaults/c/sym-0.5/seed{seed}", "visprompt", "sym", 0.5, seed, top1)
    fake_run(tmp_path, "no-ffn/c/sym-0.5/seed1", "visprompt", "sym", 0.5, 1, 70.0)  # seeds 2 and 3 not finished
    args = (["testbed-colours"], [("sym", 0.5)])
    tables = testbed_ablations.ablation_tables(tmp_path, ["defaults", "no-ffn"], *args, [1, 2, 3])
    per_task = tables.split("Per task")[1]
    assert "| defaults | 60.0 +- 10.0 |" in per_task and "| no-ffn | 70.0 (1/3 runs) |" in per_task
    assert "(k/n runs: the mean of the k seeds that finished)" in per_task
    per_task = testbed_ablations.ablation_tables(tmp_path, ["defaults", "no-ffn"], *args, [1]).split("Per task")[1]
    assert "| defaults | 70.0 |" in per_task and "+-" not in per_task.split("|---|")[1] and "runs)" not in per_task


def test_selection_table_averages_the_last_epoch_of_the_selecting_methods(tmp_path) -> None:
    sel = {"sel_precision": 0.9, "sel_recall": 0.5, "n_clean": 40, "n_selected_from": 160}
    fake_run(tmp_path, "a/seed1", "nlprompt", "sym", 0.5, 1, 60.0, sel)
    fake_run(tmp_path, "a/seed2", "nlprompt", "sym", 0.5, 2, 60.0, {**sel, "sel_precision": 0.7, "n_clean": 80})
    fake_run(tmp_path, "b/seed1", "coop", "sym", 0.5, 1, 40.0, {**sel, "sel_precision": 0.5})  # selects nothing
    many = {**sel, "sel_precision": 0.1}  # a task only nlprompt ran: not in the column's mean
    fake_run(tmp_path, "c/seed1", "nlprompt", "sym", 0.5, 1, 60.0, many)
    (tmp_path / "c" / "seed1" / "config.yaml").write_text((tmp_path / "c" / "seed1" / "config.yaml").read_text()
                                                          .replace("testbed-colours", "testbed-many"))  # fmt: skip
    for seed in (1, 2):
        fake_run(tmp_path, f"d/seed{seed}", "joapr", "sym", 0.5, seed, 60.0, {**sel, "sel_precision": 0.6})
    table = testbed_robustness.selection_table(collect_runs(tmp_path))
    assert "| nlprompt | 0.80 / 0.50 / 0.38 |" in table and "| joapr | 0.60 / 0.50 / 0.25 |" in table
    assert "coop" not in table and "sym 50%" in table


def test_the_mean_tables_average_only_the_task_seed_pairs_every_method_of_the_column_ran(tmp_path) -> None:
    """Each seed draws its own shots and noisy labels: two methods with as many seeds, but not the same ones, are
    not comparable (the count alone was compared)."""
    sel = {"sel_precision": 0.9, "sel_recall": 0.5, "n_clean": 40, "n_selected_from": 160}
    for seed in (1, 2, 3):
        fake_run(tmp_path, f"coop/seed{seed}", "coop", "sym", 0.5, seed, 60.0)
        fake_run(tmp_path, f"joapr/seed{seed}", "joapr", "sym", 0.5, seed, 50.0, {**sel, "sel_precision": 0.1 * seed})
    for seed in (1, 3, 4):  # three seeds too, one of them another
        fake_run(tmp_path, f"nl/seed{seed}", "nlprompt", "sym", 0.5, seed, 60.0 + seed, sel)
    table = testbed_robustness.group_mean_table(collect_runs(tmp_path), ("testbed-colours",))
    assert "coop" not in table and "nlprompt" not in table and "sym 50% 4" in table  # neither ran seeds 1-4
    fake_run(tmp_path, "nl/seed2", "nlprompt", "sym", 0.5, 2, 70.0, sel)
    fake_run(tmp_path, "coop/seed4", "coop", "sym", 0.5, 4, 60.0)
    table = testbed_robustness.group_mean_table(collect_runs(tmp_path), ("testbed-colours",))
    assert "| nlprompt | **64.50** |" in table and "| coop | 60.00 |" in table and "joapr" not in table
    # the selection of seeds 1 and 3 only: those both selecting methods ran
    table = testbed_robustness.selection_table(collect_runs(tmp_path))
    assert "| joapr | 0.20 / 0.50 / 0.25 |" in table and "| nlprompt | 0.90 / 0.50 / 0.25 |" in table


def _retask(run: Path, task: str) -> None:
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("testbed-colours", task))


def test_group_mean_table_averages_task_means_and_leaves_incomplete_cells_empty(tmp_path) -> None:
    for task, values in (("testbed-colours", (50.0, 60.0)), ("testbed-scenes", (70.0, 70.0))):
        for seed, value in enumerate(values, 1):
            fake_run(tmp_path, f"plus/{task}/seed{seed}", "visprompt-plus", "sym", 0.5, seed, value)
            _retask(tmp_path / f"plus/{task}/seed{seed}", task)
    fake_run(tmp_path, "nl/seed1", "nlprompt", "sym", 0.5, 1, 90.0)  # one seed, one task: no mean of this design
    table = testbed_robustness.group_mean_table(collect_runs(tmp_path), ("testbed-colours", "testbed-scenes"))
    assert "| visprompt-plus | **62.50** |" in table  # (55 + 70) / 2: the mean of the per-task means
    assert "| nlprompt | - |" not in table and "nlprompt" not in table  # no complete cell: no row
    assert "sym 50% 2" in table  # the seeds each column averages


def test_split_table_lists_each_seeds_precision_and_recall_of_the_selecting_methods(tmp_path) -> None:
    for seed, prec in enumerate((0.9, 0.8), 1):
        last = {"sel_precision": prec, "sel_recall": 0.5}
        fake_run(tmp_path, f"plus/seed{seed}", "visprompt-plus", "sym", 0.5, seed, 60.0, last)
        fake_run(tmp_path, f"coop/seed{seed}", "coop", "sym", 0.5, seed, 60.0, {**last, "sel_precision": 0.5})
    table = testbed_robustness.split_table(collect_runs(tmp_path), "testbed-colours")
    assert "| visprompt-plus | 0.90 / 0.50, 0.80 / 0.50 |" in table and "coop" not in table
    assert "no finished runs" in testbed_robustness.split_table(collect_runs(tmp_path), "testbed-many")


def test_split_table_pairs_each_value_with_its_seed_where_a_method_lacks_one(tmp_path) -> None:
    """nlprompt ran seeds 1-3, visprompt 2 and 3: visprompt's first pair is seed 2's, not seed 1's."""
    for seed in (1, 2, 3):
        fake_run(tmp_path, f"nl/seed{seed}", "nlprompt", "sym", 0.5, seed, 60.0, {"sel_precision": 0.1 * seed,
                 "sel_recall": 0.5})  # fmt: skip
    for seed in (2, 3):
        fake_run(tmp_path, f"vp/seed{seed}", "visprompt", "sym", 0.5, seed, 60.0, {"sel_precision": 0.1 * seed,
                 "sel_recall": 0.5})  # fmt: skip
    table = testbed_robustness.split_table(collect_runs(tmp_path), "testbed-colours")
    assert "| nlprompt | 1: 0.10 / 0.50, 2: 0.20 / 0.50, 3: 0.30 / 0.50 |" in table
    assert "| visprompt | 1: -, 2: 0.20 / 0.50, 3: 0.30 / 0.50 |" in table and "after its seed" in table


def test_paired_table_gives_mean_difference_t_interval_and_wins(tmp_path) -> None:
    for seed, (a, b) in enumerate([(56.0, 50.0), (58.0, 60.0), (61.0, 60.0)], 1):
        fake_run(tmp_path, f"plus/c/sym-0.75/seed{seed}", "visprompt-plus", "sym", 0.75, seed, a)
        fake_run(tmp_path, f"defaults/c/sym-0.75/seed{seed}", "visprompt", "sym", 0.75, seed, b)
    stats = paired([6.0, -2.0, 1.0])
    assert stats.mean == 5.0 / 3 and (stats.won, stats.lost, stats.n) == (2, 1, 3) and not stats.excludes_zero
    # t(0.975, 2) = 4.303, sample std of (6, -2, 1) = 4.041: half-width 10.04
    assert abs((stats.high - stats.low) / 2 - 4.303 * 4.0415 / 3**0.5) < 0.01
    assert paired([2.0, 3.0, 2.5]).excludes_zero and not paired([2.0]).excludes_zero  # one pair: no interval
    text = testbed_ablations.paired_table(tmp_path, [("plus", "defaults")], ["testbed-colours"], [("sym", 0.75)],
                                          [1, 2, 3])  # fmt: skip
    assert "| plus - defaults | +1.7 [-8.4, +11.7] 2/3 | +1.7 [-8.4, +11.7] 2/3 |" in text


def test_paired_tables_say_which_pairs_were_computed_in_two_environments(tmp_path) -> None:
    """A seed's run repeats to the last digit in one environment only, so a paired difference between runs from two
    environments is not only A - B: the tables count such pairs and name the environments."""
    for seed in (1, 2, 3):
        fake_run(tmp_path, f"defaults/c/sym-0.5/seed{seed}", "visprompt", "sym", 0.5, seed, 60.0 + seed, metrics=HERE)
        other = THERE if seed == 2 else HERE  # one variant run resumed or copied from another machine
        fake_run(tmp_path, f"full-ot/c/sym-0.5/seed{seed}", "visprompt", "sym", 0.5, seed, 61.0 + seed, metrics=other)
        fake_run(tmp_path, f"mae-noisy/c/sym-0.5/seed{seed}", "visprompt", "sym", 0.5, seed, 59.0, metrics=HERE)
    args = (["testbed-colours"], [("sym", 0.5)], [1, 2, 3])
    text = testbed_ablations.paired_table(tmp_path, [("full-ot", "defaults"), ("mae-noisy", "defaults")], *args)
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert rows["full-ot - defaults"].count("+1.0 [+1.0, +1.0] 3/3 (1 across environments)") == 2  # cell and pooled
    assert "across environments" not in rows["mae-noisy - defaults"]
    assert "1 pair above pair runs computed in different environments" in text
    one = testbed_ablations.paired_table(tmp_path, [("mae-noisy", "defaults")], *args)
    assert "across environments" not in one and "different environments" not in one

    tables = testbed_ablations.ablation_tables(tmp_path, ["defaults", "full-ot"], *args)
    assert (
        "## Environments" in tables
        and "| AMD EPYC (family 25, model 17), cpu threads=1 isa=AVX512, torch 2.14.1 | 5 |" in tables
    )
    # without `defaults` among the variants, its runs are still in each bracket, and so in the environments
    tables = testbed_ablations.ablation_tables(tmp_path, ["full-ot"], *args)
    assert "| full-ot | one OT split over the training set per epoch | 63.0 (+1.0, 3/3, 1 across environments) |" in (
        tables
    )
    assert "| AMD EPYC (family 25, model 17), cpu threads=1 isa=AVX512, torch 2.14.1 | 5 |" in tables
    assert "1 pair above pair runs computed in different environments" in tables
    tables = testbed_ablations.ablation_tables(tmp_path, ["defaults", "mae-noisy"], *args)
    assert (
        "Computed in one environment: AMD EPYC (family 25, model 17), cpu threads=1 isa=AVX512, torch 2.14.1." in tables
    )

    goals = tmp_path / "goals"
    for seed in (1, 2, 3):
        for method, top1 in (("visprompt-plus", 70.0), ("nlprompt", 65.0), ("zeroshot", 50.0)):
            env = THERE if (method, seed) == ("nlprompt", 3) else HERE
            fake_run(goals, f"{method}/seed{seed}", method, "sym", 0.5, seed, top1 + seed, metrics=env)
    text = testbed_robustness.goals_table(collect_runs(goals))
    assert "1 of the 6 pairs compared above pair runs computed in different environments" in text
    assert text.rstrip().endswith("1 against nlprompt")
    shutil.rmtree(goals / "nlprompt" / "seed3")
    fake_run(goals, "nlprompt/seed3", "nlprompt", "sym", 0.5, 3, 68.0, metrics=HERE)
    assert "different environments" not in testbed_robustness.goals_table(collect_runs(goals))


def test_goals_table_checks_each_cell_against_the_best_and_zero_shot(tmp_path) -> None:
    scores = {  # method -> (clean, sym 75%) per seed
        "visprompt-plus": [(80.0, 50.0), (81.0, 52.0), (79.0, 51.0)],
        "nlprompt": [(70.0, 58.0), (71.0, 59.0), (72.0, 60.0)],  # best at 75%, by ~8 points every seed
        "visprompt": [(78.0, 40.0), (80.0, 41.0), (78.0, 42.0)],
        "zeroshot": [(53.0, 53.0)] * 3,
    }
    for method, per_seed in scores.items():
        for seed, (clean, noisy) in enumerate(per_seed, 1):
            fake_run(tmp_path, f"{method}/sym-0/seed{seed}", method, "sym", 0.0, seed, clean)
            fake_run(tmp_path, f"{method}/sym-0.75/seed{seed}", method, "sym", 0.75, seed, noisy)
    text = testbed_robustness.goals_table(collect_runs(tmp_path))
    rows = {line.split(" | ")[1]: line for line in text.splitlines() if line.startswith("| testbed-colours")}
    assert "| visprompt (78.7) | +1.3 [-0.1, +2.8] 3/3 | yes |" in rows["clean"]  # best, 1.3 over visprompt
    assert "| nlprompt (59.0) | -8.0 [" in rows["sym 75%"] and "| **no** |" in rows["sym 75%"]
    assert "-2.0 [" in rows["sym 75%"]  # below zero-shot (51.0 vs 53.0)
    assert "every cell: no (1 of 2 cells: colours sym 75% (-8.0 vs nlprompt))" in text
    assert "never below zero-shot (cell means): no (1 of 2 cells: colours sym 75% (-2.0))" in text
    # over the two cells: plus 65.5, nlprompt 65.0 (best baseline), visprompt 59.8
    assert "visprompt-plus - nlprompt over all cells: +0.50 points (goal >= +3: not met)" in text
    assert "visprompt-plus - visprompt over all cells: +5.67 points (goal >= +4: met)" in text
    shutil.rmtree(tmp_path / "nlprompt" / "sym-0.75")  # nlprompt now has runs in one cell of two
    text = testbed_robustness.goals_table(collect_runs(tmp_path))
    assert "the best baseline over all cells: not computed (nlprompt without runs in every cell)" in text
    assert "visprompt-plus - zeroshot over all cells" not in text  # zero-shot is not called the best baseline


def test_goals_table_compares_a_cell_only_with_methods_run_on_the_targets_seeds(tmp_path) -> None:
    for seed in (1, 2, 3):
        fake_run(tmp_path, f"plus/seed{seed}", "visprompt-plus", "sym", 0.5, seed, 60.0)
        fake_run(tmp_path, f"zeroshot/seed{seed}", "zeroshot", "sym", 0.5, seed, 50.0)
        fake_run(tmp_path, f"nlprompt/seed{seed}", "nlprompt", "sym", 0.5, seed, 58.0 + seed)
    fake_run(tmp_path, "coop/seed3", "coop", "sym", 0.5, 3, 90.0)  # one lucky seed: no mean of the same design
    text = testbed_robustness.goals_table(collect_runs(tmp_path))
    row = next(line for line in text.splitlines() if line.startswith("| testbed-colours"))
    assert "| nlprompt (60.0) |" in row and "| yes |" in row and "coop" not in row
    assert "Left out where their seeds differ from visprompt-plus's: coop (colours sym 50%)" in text
    assert "| coop |" not in text  # nor in the mean over cells
    for seed in (1, 2):  # a cell where no other method ran the target's seeds is not judged, and says so
        fake_run(tmp_path, f"plus75/seed{seed}", "visprompt-plus", "sym", 0.75, seed, 60.0)
    fake_run(tmp_path, "nl75/seed1", "nlprompt", "sym", 0.75, 1, 70.0)
    text = testbed_robustness.goals_table(collect_runs(tmp_path))
    assert "every cell: yes in the 1 cells judged; not judged in 1 cells (no visprompt-plus runs, or no other" in text
    fake_run(tmp_path, "nl25/seed1", "nlprompt", "sym", 0.25, 1, 70.0)  # a cell without the target: not judged either
    text = testbed_robustness.goals_table(collect_runs(tmp_path))
    assert "every cell: yes in the 1 cells judged; not judged in 2 cells" in text and "colours sym 25%" in text
    assert "never below zero-shot (cell means): yes; not judged in 1 cells (no zero-shot run" in text


def test_goals_table_does_not_judge_a_cell_below_the_best_on_one_seed(tmp_path) -> None:
    """One pair gives no interval: a cell where the target is below the best on one seed is not judged (it was
    "yes, within the interval"), and one where it is the best on one seed is."""
    for method, top1 in (("visprompt-plus", 50.0), ("coop", 80.0), ("zeroshot", 40.0)):
        fake_run(tmp_path, f"{method}/sym-0.5/seed1", method, "sym", 0.5, 1, top1)
    text = testbed_robustness.goals_table(collect_runs(tmp_path))
    row = next(line for line in text.splitlines() if line.startswith("| testbed-colours"))
    assert "| -30.0 0/1 | not judged (one seed) |" in row
    assert ("every cell: no cell judged; not judged in 1 cells (below the best on one seed: no interval: colours "
            "sym 50%)") in text  # fmt: skip
    for method, top1 in (("visprompt-plus", 90.0), ("coop", 80.0), ("zeroshot", 40.0)):
        fake_run(tmp_path, f"{method}/sym-0.75/seed1", method, "sym", 0.75, 1, top1)  # the best: judged
    text = testbed_robustness.goals_table(collect_runs(tmp_path))
    assert "every cell: yes in the 1 cells judged; not judged in 1 cells (below the best on one seed" in text


def test_goal_lines_print_no_gap_short_of_the_goal_as_the_goal(tmp_path) -> None:
    """A gap of 2.998 printed "+3.00 points (goal >= +3: not met)": the figure gets the digits the verdict needs."""
    for seed, (plus, coop, vp) in enumerate([(83.0, 80.004, 79.0), (84.0, 81.0, 80.0)], 1):
        for method, top1 in (("visprompt-plus", plus), ("coop", coop), ("visprompt", vp), ("zeroshot", 40.0)):
            fake_run(tmp_path, f"{method}/seed{seed}", method, "sym", 0.5, seed, top1)
    text = testbed_robustness.goals_table(collect_runs(tmp_path))
    assert "- visprompt-plus - coop over all cells: +2.998 points (goal >= +3: not met)" in text
    assert "- visprompt-plus - visprompt over all cells: +4.00 points (goal >= +4: met)" in text
    assert testbed_robustness._short_of(2.9999999, 3.0) == "+2.9999999" and testbed_robustness._short_of(3.0, 3.0) == (
        "+3.00"
    )


def test_goals_summaries_put_each_plus_variant_in_place_of_the_grids_plus(tmp_path) -> None:
    grid, out = tmp_path / "grid", tmp_path / "ablations"
    for seed in (1, 2):
        fake_run(grid, f"c/zeroshot/sym-0.5/seed{seed}", "zeroshot", "sym", 0.5, seed, 53.0)
        fake_run(grid, f"c/nlprompt/sym-0.5/seed{seed}", "nlprompt", "sym", 0.5, seed, 60.0 + seed)
        fake_run(grid, f"c/visprompt/sym-0.5/seed{seed}", "visprompt", "sym", 0.5, seed, 55.0)
        fake_run(grid, f"c/visprompt-plus/sym-0.5/seed{seed}", "visprompt-plus", "sym", 0.5, seed, 99.0)  # replaced
        fake_run(out, f"weak/c/visprompt-plus/sym-0.5/seed{seed}", "visprompt-plus", "sym", 0.5, seed, 50.0)
        fake_run(out, f"strong/c/visprompt-plus/sym-0.5/seed{seed}", "visprompt-plus", "sym", 0.5, seed, 70.0)
    fake_run(grid, "c/nlprompt/sym-0.5/seed3", "nlprompt", "sym", 0.5, 3, 90.0)  # a seed not asked for: left out
    text = testbed_ablations.goals_summaries(out, grid, ["weak", "strong"], ["testbed-colours"], [("sym", 0.5)], [1, 2])
    weak, strong = text.split("weak:")[1].split("strong:")
    assert "never below zero-shot (cell means): no (1 of 1 cells: colours sym 50% (-3.0))" in weak
    assert "- visprompt-plus - nlprompt over all cells: -11.50 points (goal >= +3: not met)" in weak
    assert "- visprompt-plus - nlprompt over all cells: +8.50 points (goal >= +3: met)" in strong
    assert "- visprompt-plus - visprompt over all cells: +15.00 points (goal >= +4: met)" in strong


def test_per_run_rows_keep_each_finished_runs_top1_split_and_label(tmp_path) -> None:
    fake_run(tmp_path, "plus/seed2", "visprompt-plus", "sym", 0.5, 2, 61.5, {"sel_precision": 0.9, "sel_recall": 0.7})
    fake_run(tmp_path, "plus/seed1", "visprompt-plus", "sym", 0.5, 1, 60.0, {"sel_precision": 0.8, "sel_recall": 0.6})
    fake_run(tmp_path, "coop/seed1", "coop", "sym", 0.5, 1, 55.0)
    (tmp_path / "coop" / "seed1" / "status").write_text("failed\n")  # an unfinished run has no row
    rows = testbed_robustness.per_run_rows(collect_runs(tmp_path))
    assert [(r["method"], r["seed"], r["top1"]) for r in rows] == [
        ("visprompt-plus", 1, 60.0),
        ("visprompt-plus", 2, 61.5),
    ]
    assert (rows[0]["noise"], rows[0]["rate"], rows[0]["sel_precision"], rows[1]["sel_recall"]) == (
        "sym",
        0.5,
        0.8,
        0.7,
    )


def finish(run, top1: float) -> None:
    """A finished run of a sweep's ``run``, with its resolved config."""
    from visprompt.config import to_yaml

    run.path.mkdir(parents=True)
    (run.path / "config.yaml").write_text(to_yaml(run.config))
    (run.path / "status").write_text("done\n")
    (run.path / "metrics.json").write_text(json.dumps({"top1": top1}))


def grid_folder(tmp_path: Path) -> tuple[Path, Path, list]:
    """A two-run grid (data root DATA_A) whose runs are finished in a runs folder, each with its resolved config."""
    from visprompt.sweep import expand_sweep, load_sweep

    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"base": {"data.root": str(tmp_path / "DATA_A")},
                                    "grid": {"method": ["coop", "visprompt-plus"], "noise.rate": [0.5]}}))  # fmt: skip
    out = tmp_path / "runs"
    runs = expand_sweep(load_sweep(grid, out_dir=out))
    for run in runs:
        finish(run, 60.0)
    return grid, out, runs


def test_the_robustness_report_refuses_runs_the_grid_would_mislabel(tmp_path, capsys) -> None:
    import pytest

    from visprompt.errors import ConfigError
    from visprompt.sweep import expand_sweep, load_sweep

    grid, out, runs = grid_folder(tmp_path)
    testbed_robustness.check_runs_folder(runs, out, grid)  # the grid's own runs: reported

    # the same runs read with another data root (the documented command without its --set): refused, one line
    other = expand_sweep(load_sweep(grid, out_dir=out, overrides=[f"data.root={tmp_path / 'DATA_B'}"]))
    with pytest.raises(ConfigError, match=r"2 finished runs do not match .*: data\.root .*DATA_A.* -> .*DATA_B"):
        testbed_robustness.check_runs_folder(other, out, grid)

    # a run made before its method's recipe changed would be labelled with today's recipe: refused
    plus = next(run for run in runs if run.config.method.name == "visprompt-plus")
    saved = plus.path / "config.yaml"
    saved.write_text(saved.read_text().replace("noisy_weight: kept-spread-classes", "noisy_weight: kept-spread"))
    with pytest.raises(ConfigError, match=r"1 finished runs .*\.noisy_weight 'kept-spread' -> 'kept-spread-classes'"):
        testbed_robustness.check_runs_folder(runs, out, grid)
    code = testbed_robustness.main(["--grid", str(grid), "--out", str(out), "--no-run"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: runs folder") and err.count("\n") == 1
    assert not (out / "report").exists()  # nothing written

    # a run the grid does not name (say, a sixth seed) would enter its pooled tables: refused
    shutil.copytree(plus.path, out / "extra" / "seed6")
    saved.write_text(saved.read_text().replace("noisy_weight: kept-spread", "noisy_weight: kept-spread-classes"))
    with pytest.raises(ConfigError, match=r"1 runs that the grid .* does not name, e.g. extra/seed6"):
        testbed_robustness.check_runs_folder(runs, out, grid)


def test_the_ablation_script_refuses_bad_arguments_in_one_line_before_running_anything(tmp_path, capsys) -> None:
    out, root = tmp_path / "runs", tmp_path / "DATA"
    base = ["--root", str(root), "--out", str(out), "--no-run", "--variants", "defaults"]
    cases = {
        # a variant compared but not listed would be tabulated without its runs' configs being checked
        ("--compare", "alpha-0.8:defaults"): "--compare alpha-0.8:defaults: alpha-0.8 not in --variants",
        ("--compare", "alpha-0.8"): "--compare: expected A:B",
        ("--settings", "sym"): "--settings: expected TYPE:RATE",
        # both the clean setting: two runs of each seed, one of them dropped from the tables
        ("--settings", "sym:0", "asym:0"): "--settings sym:0 asym:0: clean given twice (a rate of 0 is the clean",
        ("--settings", "sym:1.5"): "noise.rate: expected a value in [0, 1), got 1.5",
        ("--tasks", "nope"): "unknown testbed task 'nope'",
    }
    for extra, message in cases.items():
        assert testbed_ablations.main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not out.exists() and not root.exists()  # nothing built, nothing written


@pytest.mark.parametrize("name", list(testbed_ablations.VARIANTS))
def test_every_ablation_variant_resolves_to_a_run_config(name: str) -> None:
    # a config check added later (a field the settings leave unread) must not refuse a variant the study runs
    overrides = dict(parse_override(item) for item in testbed_ablations.VARIANTS[name][1])
    method = overrides.pop("method", "visprompt")
    assert load_config(overrides=overrides, method=method).method.name == method


def test_the_ablation_script_checks_the_defaults_it_pairs_each_variant_with(tmp_path, capsys) -> None:
    out, root = (tmp_path / "runs").resolve(), tmp_path / "DATA"
    design = (["testbed-colours"], [("sym", 0.5)], [1, 2])
    for run in testbed_ablations.variant_runs(out, "defaults", str(root), 30, *design):
        finish(run, 71.0)
    for run in testbed_ablations.variant_runs(out, "alpha-0.8", str(root), 2, *design):
        finish(run, 50.5)
    # the defaults were trained for 30 epochs: a difference of 2-epoch runs to them is not the variant's
    code = testbed_ablations.main(["--no-run", "--root", str(root), "--out", str(out), "--variants", "alpha-0.8",
                                   "--epochs", "2", "--tasks", "testbed-colours", "--settings", "sym:0.5", "--seeds",
                                   "1", "2"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"--out {out / 'defaults'}: 2 finished runs do not match" in err and "optim.epochs 30 -> 2" in err
    assert not root.exists()  # refused before anything was built


def test_the_ablation_script_refuses_runs_its_grids_do_not_name_where_its_tables_read(tmp_path, capsys) -> None:
    import pytest

    from visprompt.errors import ConfigError, DataError

    out, root = (tmp_path / "runs").resolve(), tmp_path / "DATA"
    tasks, seeds = ["testbed-colours"], [1, 2]
    runs = testbed_ablations.variant_runs(out, "defaults", str(root), 30, tasks, [("asym", 0.0)], seeds)
    for run in runs:
        finish(run, 70.0)
    testbed_ablations.refuse_strays(out, runs, ["defaults"], tasks, [("asym", 0.0)], seeds)
    # another study's runs in the same --out (another task) are not read: they may stay
    for run in testbed_ablations.variant_runs(out, "defaults", str(root), 30, ["testbed-scenes"], [("sym", 0.0)], [1]):
        finish(run, 80.0)
    testbed_ablations.refuse_strays(out, runs, ["defaults"], tasks, [("asym", 0.0)], seeds)
    # a leftover clean run at sym-0 (another --epochs) would stand for its seed beside asym-0's, unchecked
    for run in testbed_ablations.variant_runs(out, "defaults", str(root), 2, tasks, [("sym", 0.0)], seeds):
        finish(run, 20.0)
    with pytest.raises(ConfigError, match=r"2 runs of the tables' .* e\.g\. defaults/testbed-colours/visprompt/sym-0/"):
        testbed_ablations.refuse_strays(out, runs, ["defaults"], tasks, [("asym", 0.0)], seeds)
    base = ["--no-run", "--root", str(root), "--out", str(out), "--variants", "alpha-0.8", "--tasks", *tasks]
    assert testbed_ablations.main([*base, "--settings", "asym:0", "--seeds", "1", "2"]) == 2  # via the defaults
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {out}: 2 runs") and err.count("\n") == 1
    # the tables themselves refuse two runs of one seed, whichever setting of the clean one they are read for
    with pytest.raises(DataError, match=r"both defaults on testbed-colours, clean, seed 1: remove one"):
        testbed_ablations.ablation_tables(out, ["defaults"], tasks, [("sym", 0.0)], seeds)

    # --goals: a run the benchmark grid does not name, e.g. a 2-epoch CoCoOp, would be compared as a baseline
    from visprompt.sweep import expand_sweep, load_sweep

    goals = tmp_path / "goals"
    grid = expand_sweep(load_sweep(testbed_ablations.GRID, out_dir=goals, overrides=[f"data.root={root.resolve()}"]))
    cocoop = next(run for run in grid if run.name == "testbed-colours/cocoop/sym-0.5/seed1")
    finish(cocoop, 60.0)  # the grid's own run (testbed-plus-goals.yaml has none, the full benchmark grid has)
    testbed_ablations.check_goals_folder(goals, str(root))
    fake_run(goals, "extra/cocoop/sym-0.5/seed2", "cocoop", "sym", 0.5, 2, 90.0)
    shutil.rmtree(out)
    code = testbed_ablations.main([*base, "--settings", "sym:0.5", "--seeds", "1", "2", "--goals", str(goals)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and not root.exists()
    assert f"--goals {goals}: 1 runs that the grid configs/sweeps/testbed.yaml does not name, e.g. extra/" in err
    shutil.rmtree(goals / "extra")
    config = cocoop.path / "config.yaml"  # at the grid's path, but trained for 2 epochs
    saved = yaml.safe_load(config.read_text())
    saved["optim"]["epochs"] = 2
    config.write_text(yaml.safe_dump(saved))
    with pytest.raises(ConfigError, match=r"--goals .*: 1 finished runs do not match .* optim\.epochs 2 -> "):
        testbed_ablations.check_goals_folder(goals, str(root))


def test_the_robustness_tables_refuse_a_grid_with_two_configs_of_one_method(tmp_path) -> None:
    """The tables key runs by method name: a second config of a method (an option axis) would replace the first's
    run of each seed, and the goals would compare against whichever came last."""
    import pytest

    from visprompt.errors import ConfigError, DataError
    from visprompt.sweep import expand_sweep, load_sweep

    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"base": {"data.root": str(tmp_path / "DATA")},
                                    "grid": {"method": ["visprompt"], "prompt.gate": ["learned", "zero"],
                                             "noise.rate": [0.5]}}))  # fmt: skip
    runs = expand_sweep(load_sweep(grid, out_dir=tmp_path / "runs"))
    with pytest.raises(ConfigError, match=r"more than one config, e\.g\. visprompt\[prompt\.gate=learned"):
        testbed_robustness.check_runs_folder(runs, tmp_path / "runs", grid)
    axes = [{"method": ["visprompt"], "optim.epochs": [5]}, {"method": ["coop"], "optim.epochs": [50]}]
    grid.write_text(yaml.safe_dump({"base": {"data.root": str(tmp_path / "DATA"), "noise.rate": 0.5}, "grid": axes}))
    runs = expand_sweep(load_sweep(grid, out_dir=tmp_path / "runs"))  # the report labels them apart by epochs
    with pytest.raises(ConfigError, match=r"methods of one task run with different data, backbone or epochs, e\.g\."):
        testbed_robustness.check_runs_folder(runs, tmp_path / "runs", grid)
    for seed in (1, 2):  # the same two configs in a folder: the tables refuse them rather than keep one
        for gate, top1 in (("learned", 80.0), ("zero", 40.0)):
            fake_run(tmp_path, f"vp-{gate}/seed{seed}", "visprompt", "sym", 0.5, seed, top1)
            config = tmp_path / f"vp-{gate}/seed{seed}" / "config.yaml"
            config.write_text(yaml.safe_dump({**yaml.safe_load(config.read_text()), "prompt": {"gate": gate}}))
    with pytest.raises(DataError, match=r"runs vp-learned/seed1 and vp-zero/seed1 are both visprompt"):
        testbed_robustness.goals_table(collect_runs(tmp_path))


def _two_versions(root: Path, old: list[float], new: list[float], rate: float = 0.5) -> None:
    for seed, (a, b) in enumerate(zip(old, new, strict=True), 1):
        for folder, top1 in (("old", a), ("new", b)):
            name = f"c/joapr/sym-{rate}/seed{seed}"
            fake_run(root / folder, name, "joapr", "sym", rate, seed, top1)
            (root / folder / name / "split.json").write_text(json.dumps({"train": {"label": [seed, 1]}}))


def test_compare_folders_pairs_two_versions_of_one_grid_and_refuses_what_does_not_pair(tmp_path) -> None:
    _two_versions(tmp_path, [50.0, 60.0, 55.0], [52.0, 61.0, 55.0])
    text = compare_folders.compare(tmp_path / "old", tmp_path / "new")
    # diffs +2, +1, 0: mean +1.0, t(0.975, 2) x 1.0 / sqrt(3) = 2.48; two pairs won, a tie neither
    assert "| joapr | sym 50% | 3 | 55.00 | 56.00 | +1.0 [-1.5, +3.5] 2/3 |" in text
    assert "| joapr | pooled | 3 |" in text
    (tmp_path / "new/c/joapr/sym-0.5/seed3/split.json").write_text(json.dumps({"train": {"label": [3, 0]}}))
    with pytest.raises(compare_folders.DataError, match="seed3: the two runs saw other samples or labels"):
        compare_folders.compare(tmp_path / "old", tmp_path / "new")
    shutil.rmtree(tmp_path / "new/c/joapr/sym-0.5/seed3")
    with pytest.raises(compare_folders.DataError, match="1 without a partner"):
        compare_folders.compare(tmp_path / "old", tmp_path / "new")
    (tmp_path / "old/c/joapr/sym-0.5/seed3/status").write_text("running\n")
    with pytest.raises(compare_folders.DataError, match="seed3: not finished with a finite top1"):
        compare_folders.compare(tmp_path / "old", tmp_path / "new")
