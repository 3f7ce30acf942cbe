"""Grid files: expansion into runs, deterministic run directories, layering, errors, the shipped grids."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from visprompt.config import NoiseSpec, flatten_tree, load_config, to_dict, untrained_values
from visprompt.errors import ConfigError
from visprompt.registry import METHODS
from visprompt.sweep import expand_sweep, load_sweep
from worlds import make_folder_dataset

REPO = Path(__file__).resolve().parents[1]


def write_grid(tmp_path: Path, body: dict, name: str = "grid.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def test_product_of_axes_with_readable_deterministic_names(tmp_path) -> None:
    grid = {
        "out_dir": str(tmp_path / "out"),
        "base": {"backbone": "rn50", "data.shots": 4},
        "grid": {"dataset": ["dtd", "eurosat"], "method": ["coop", "visprompt"], "noise.type": ["sym", "asym"],
                 "noise.rate": [0.125, 0.5], "run.seed": [1, 2, 3]},
    }  # fmt: skip
    runs = expand_sweep(load_sweep(write_grid(tmp_path, grid)))
    assert len(runs) == 2 * 2 * 2 * 2 * 3
    names = [r.name for r in runs]
    assert len(set(names)) == len(names)
    assert names[0] == "dtd/coop/sym-0.125/seed1" and names[-1] == "eurosat/visprompt/asym-0.5/seed3"
    assert [r.name for r in expand_sweep(load_sweep(write_grid(tmp_path, grid)))] == names  # deterministic
    for run in runs:
        cfg = run.config
        dataset, method, noise, seed = run.name.split("/")
        assert (cfg.data.dataset, cfg.method.name, f"{cfg.noise.type}-{cfg.noise.rate:g}", f"seed{cfg.run.seed}") == (
            dataset, method, noise, seed)  # fmt: skip
        assert cfg.data.shots == 4 and cfg.backbone.arch == "RN50-quickgelu"
        assert cfg.run.name == run.name and Path(cfg.run.out_dir) == (tmp_path / "out").resolve()
        assert run.path == (tmp_path / "out").resolve() / run.name


def test_layers_presets_then_files_then_base_then_axes(tmp_path) -> None:
    extra = tmp_path / "extra.yaml"
    extra.write_text("optim: {epochs: 7, lr: 0.01}\nprompt: {n_ctx: 8, ctx_init: ''}\n")
    grid = {
        "base": {"config": "extra.yaml", "optim": {"lr": 0.05}, "run.seed": 4},
        "grid": {"method": ["cocoop", "visprompt"], "run.seed": [5]},
    }
    runs = expand_sweep(load_sweep(write_grid(tmp_path, grid), out_dir=tmp_path / "o", overrides=["data.shots=2"]))
    cocoop, visprompt = (r.config for r in runs)
    assert cocoop.optim.batch_size == 1  # from the cocoop preset
    assert cocoop.optim.epochs == 7 and cocoop.prompt.n_ctx == 8  # the config file beats the preset
    assert cocoop.prompt.ctx_init == "" and visprompt.prompt.n_ctx == 8
    assert cocoop.optim.lr == 0.05  # a base key beats the config file
    assert cocoop.run.seed == 5  # an axis beats the base
    assert cocoop.data.shots == 2 and visprompt.data.shots == 2  # command-line overrides extend the base
    assert visprompt.method.selection.kind == "ot" and cocoop.method.selection.kind == "none"
    assert runs[0].name.startswith("testbed-backgrounds/cocoop/sym-0/")  # default dataset and clean noise


def test_other_axes_get_their_own_path_segment(tmp_path) -> None:
    grid = {"grid": {"method": ["visprompt"], "prompt.gate": ["learned", "zero"], "optim.lr": [0.002, 1e-3]}}
    runs = expand_sweep(load_sweep(write_grid(tmp_path, grid)))
    assert [r.name for r in runs] == [
        "testbed-backgrounds/visprompt/sym-0/prompt.gate-learned/optim.lr-0.002/seed1",
        "testbed-backgrounds/visprompt/sym-0/prompt.gate-learned/optim.lr-0.001/seed1",
        "testbed-backgrounds/visprompt/sym-0/prompt.gate-zero/optim.lr-0.002/seed1",
        "testbed-backgrounds/visprompt/sym-0/prompt.gate-zero/optim.lr-0.001/seed1",
    ]
    assert runs[2].config.prompt.gate == "zero" and runs[3].config.optim.lr == 1e-3
    assert load_sweep(write_grid(tmp_path, grid)).out_dir == (Path.cwd() / "runs" / "grid").resolve()


def test_yaml_exponents_without_a_dot_are_numbers(tmp_path) -> None:
    path = tmp_path / "grid.yaml"
    path.write_text("base:\n  optim.warmup_lr: 1e-5\ngrid:\n  optim.lr: [1e-3, 2e-3]\n")  # YAML 1.1: strings
    runs = expand_sweep(load_sweep(path))
    assert [r.config.optim.lr for r in runs] == [1e-3, 2e-3] and runs[0].config.optim.warmup_lr == 1e-5
    assert runs[0].name.endswith("/optim.lr-1e-3/seed1")


def test_a_list_of_grids_is_a_union_and_overlaps_run_once(tmp_path) -> None:
    grid = {"grid": [
        {"noise.type": ["sym"], "noise.rate": [0.0, 0.5]},
        {"noise.type": ["asym", "sym"], "noise.rate": [0.5]},
    ]}  # fmt: skip
    names = [r.name for r in expand_sweep(load_sweep(write_grid(tmp_path, grid)))]
    assert [n.split("/")[2] for n in names] == ["sym-0", "sym-0.5", "asym-0.5"]


def test_an_axis_of_one_grid_names_the_runs_of_the_others_by_their_value(tmp_path) -> None:
    grid = {"grid": [{"method": ["visprompt"], "prompt.gate": ["zero", "off"]}, {"method": ["coop"]}]}
    names = [r.name for r in expand_sweep(load_sweep(write_grid(tmp_path, grid)))]
    assert names[1:] == ["testbed-backgrounds/visprompt/sym-0/prompt.gate-off/seed1",
                         "testbed-backgrounds/coop/sym-0/prompt.gate-learned/seed1"]  # fmt: skip


def test_pairs_per_class_protocol_names(tmp_path) -> None:
    grid = {"base": {"noise.type": "pairs-per-class"},
            "grid": {"noise.false_per_class": [2, 4], "noise.pair_flip": [False, True]}}  # fmt: skip
    names = [r.name.split("/")[2] for r in expand_sweep(load_sweep(write_grid(tmp_path, grid)))]
    assert names == ["pairs2", "pairs2-flip", "pairs4", "pairs4-flip"]


def test_open_set_names_hold_the_held_out_class_count(tmp_path) -> None:
    grid = {"base": {"noise.type": "open-set", "noise.rate": 0.25}, "grid": {"noise.open_set_classes": [1, 2]}}
    names = [r.name.split("/")[2] for r in expand_sweep(load_sweep(write_grid(tmp_path, grid)))]
    assert names == ["open-set-0.25-k1", "open-set-0.25-k2"]


def test_relative_data_root_is_made_absolute(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    run = expand_sweep(load_sweep(write_grid(tmp_path, {"base": {"data.root": "DATA"}})))[0]
    assert run.config.data.root == str(tmp_path.resolve() / "DATA")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"grid": {"optim.lrr": [0.1]}}, "run {optim.lrr=0.1}: unknown config key optim.lrr; did you mean optim.lr?"),
        ({"grid": {"method": ["coopp"]}}, "unknown method 'coopp'"),
        ({"grid": {"noise.rate": [1.5]}}, "noise.rate: expected a value in [0, 1), got 1.5"),
        ({"grid": {"run.name": ["x"]}}, "run.name is set by the sweep"),
        ({"base": {"shots": 16}}, "unknown key 'shots'"),
        ({"grid": {"noise.rate": []}}, "grid.noise.rate: expected a non-empty list"),
        ({"grids": {}}, "unknown key 'grids'"),
        ({"base": {"data.shots.x": 1}}, "data.shots: expected an integer"),
        ({"base": {"config": ["missing.yaml"]}}, "missing.yaml does not exist"),
        ({"base": {"dataset": "folder"}, "grid": {"data.path": ["a/b", "a-b"]}}, "share the directory"),
        # an axis whose values do not reach its runs (a dotted key wins over a preset or shorthand)
        (
            {"base": {"backbone.arch": "testbed"}, "grid": {"backbone": ["rn50", "vit-b-16"]}},
            "axis backbone: backbone rn50 sets backbone.arch, and so does base, which wins over a preset",
        ),
        (
            {"base": {"data.dataset": "dtd"}, "grid": {"dataset": ["eurosat"]}},
            "axis dataset: dataset eurosat sets data.dataset, and so does base, which wins over a shorthand",
        ),
        (
            {"grid": {"backbone": ["rn50", "rn101"], "backbone.weights": [None]}},
            "backbone rn50 sets backbone.weights, and so does axis backbone.weights",
        ),
    ],
)
def test_errors_are_one_line_and_name_the_file(tmp_path, body, message) -> None:
    path = write_grid(tmp_path, body)
    with pytest.raises(ConfigError) as err:
        expand_sweep(load_sweep(path))
    text = str(err.value)
    assert message in text and "\n" not in text and str(path) in text


@pytest.mark.parametrize(
    ("axis", "values", "override", "field"),
    [
        ("optim.epochs", [30], "optim.epochs=5", "optim.epochs"),  # the axis won: every run kept 30 epochs
        ("dataset", ["dtd"], "data.dataset=eurosat", "data.dataset"),  # the --set won: the axis was lost
        ("method.name", ["coop", "visprompt"], "method=cocoop", "method.name"),
        ("backbone", ["rn50", "vit-b-16"], "backbone.arch=testbed", "backbone.arch"),
        ("backbone.arch", ["testbed"], "backbone=rn50", "backbone.arch"),
    ],
)
def test_a_set_key_that_an_axis_sets_is_refused(tmp_path, axis, values, override, field) -> None:
    path = write_grid(tmp_path, {"grid": [{"run.seed": [1, 2]}, {axis: values}]})
    with pytest.raises(ConfigError) as err:
        load_sweep(path, overrides=["data.shots=2", override])
    text = str(err.value)
    assert f"--set {override}: the grid's axis {axis} sets {field} too" in text
    assert "\n" not in text and str(path) in text
    with pytest.raises(
        ConfigError, match=r"--set optim\.epochs=5: the grid's axis optim\.epochs sets optim\.epochs too"
    ):
        load_sweep(REPO / "configs/sweeps/testbed.yaml", overrides=["optim.epochs=5"])  # CoCoOp's runs alone got 5


def test_a_backbone_axis_names_runs_by_the_backbone_they_use(tmp_path) -> None:
    """The bug this guards against: a base ``backbone.arch`` under an axis ``backbone: [rn50, vit-b-16]`` named runs
    backbone-rn50 and backbone-vit-b-16 that both trained the base's backbone (a dotted key wins over a preset)."""
    (tmp_path / "extra.yaml").write_text("backbone: {weights: null}\n")  # a config file wins over a preset too
    grid = {"base": {"config": "extra.yaml"}, "grid": {"backbone": ["rn50", "vit-b-16"]}}
    with pytest.raises(
        ConfigError, match=r"backbone rn50 sets backbone\.weights, and so does base\.config extra\.yaml"
    ):
        expand_sweep(load_sweep(write_grid(tmp_path, grid)))
    # the base's preset under another grid's dotted axis: that grid's run is named by its own backbone
    testbed = {"backbone.arch": ["testbed"], "backbone.weights": [None]}
    grid = {"base": {"backbone": "rn50"}, "grid": [{"backbone": ["rn101", "vit-b-16"]}, testbed]}
    runs = expand_sweep(load_sweep(write_grid(tmp_path, grid)))
    assert [r.name.split("/")[3] for r in runs] == ["backbone-rn101", "backbone-vit-b-16", "backbone-testbed"]
    assert [r.config.backbone.arch for r in runs] == ["RN101-quickgelu", "ViT-B-16-quickgelu", "testbed"]


def test_missing_grid_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_sweep(tmp_path / "nope.yaml")


def test_paper_protocol_grid() -> None:
    runs = expand_sweep(load_sweep(REPO / "configs/sweeps/paper-rn50.yaml", out_dir="/tmp/unused"))
    cfgs = [r.config for r in runs]
    datasets = {c.data.dataset for c in cfgs}
    assert datasets == {"caltech101", "oxford_flowers", "oxford_pets", "ucf101", "dtd", "eurosat", "food101n"}
    assert {c.backbone.arch for c in cfgs} == {"RN50-quickgelu"} and {c.data.shots for c in cfgs} == {16}
    assert {c.run.seed for c in cfgs} == {1, 2, 3}
    synthetic = [c for c in cfgs if c.data.dataset != "food101n"]
    assert {c.noise.rate for c in synthetic} == {0.125, 0.25, 0.375, 0.5, 0.625, 0.75}
    assert {c.noise.type for c in synthetic} == {"sym", "asym"}
    assert {(c.noise.type, c.noise.rate) for c in cfgs if c.data.dataset == "food101n"} == {("none", 0.0)}
    methods = {c.method.name for c in cfgs}
    assert {"visprompt", "coop", "nlprompt"} <= methods
    assert len(runs) == len(methods) * 3 * (6 * 2 * 6 + 1)


def test_testbed_benchmark_grid() -> None:
    runs = expand_sweep(load_sweep(REPO / "configs/sweeps/testbed.yaml", out_dir="/tmp/unused"))
    cfgs = [r.config for r in runs]
    assert {(c.backbone.arch, c.backbone.weights) for c in cfgs} == {("testbed", None)}
    small = [c for c in cfgs if c.data.dataset != "testbed-many"]
    # the 10-class tasks: every registered method but the ablation variants, 7 settings, 5 seeds
    methods = {m for m in METHODS.names() if METHODS.get(m).variant_of is None} | {"visprompt-faithful"}
    assert {c.method.name for c in small} == methods
    assert {c.data.dataset for c in small} == {"testbed-backgrounds", "testbed-colours", "testbed-scenes"}
    for noise in ("sym", "asym"):
        noisy = {c.noise.rate for c in small if c.noise.type == noise}
        assert noisy | {0.0} == {0.0, 0.25, 0.5, 0.75}  # the clean setting runs once (as sym-0)
    assert {c.run.seed for c in small} == {1, 2, 3, 4, 5}
    assert len(small) == len(methods) * 3 * 7 * 5
    many = [c for c in cfgs if c.data.dataset == "testbed-many"]
    assert {c.method.name for c in many} == methods  # every method, every setting, 5 seeds, as the 10-class tasks
    assert {(c.noise.type, c.noise.rate) for c in many} == {(c.noise.type, c.noise.rate) for c in small}
    assert {c.run.seed for c in many} == {1, 2, 3, 4, 5}
    assert len(many) == len(methods) * 7 * 5


def test_plus_goals_grid_is_a_subset_of_the_benchmark_grid_with_plus_and_the_baselines_in_every_cell() -> None:
    from visprompt.config import to_yaml

    full = {r.name: r for r in expand_sweep(load_sweep(REPO / "configs/sweeps/testbed.yaml", out_dir="/tmp/unused"))}
    goals = expand_sweep(load_sweep(REPO / "configs/sweeps/testbed-plus-goals.yaml", out_dir="/tmp/unused"))
    for run in goals:  # the same run directory and the same configuration as the benchmark grid's run
        assert run.name in full, run.name
        assert to_yaml(run.config) == to_yaml(full[run.name].config), run.name
    cell = lambda r: (r.config.data.dataset, r.config.noise.type, r.config.noise.rate, r.config.run.seed)  # noqa: E731
    for method in ("visprompt-plus", "zeroshot", "visprompt", "nlprompt", "joapr", "coop-gce", "coop"):
        # in every cell with every seed: the mean goals' pooled pairs
        assert {cell(r) for r in goals if r.config.method.name == method} == {cell(r) for r in full.values()}
    others = {cell(r)[:3] for r in goals if r.config.method.name not in ("visprompt-plus", "zeroshot")}
    assert others == {cell(r)[:3] for r in full.values()}  # a best other method in every cell


def test_zero_shot_runs_of_a_grid_hold_the_training_fields() -> None:
    # the shipped grids give zero-shot CLIP the trained methods' optim.epochs and data.augment (one axis, one base):
    # its runs hold the values of a method that trains nothing, whatever the grid or --set give the others
    held = untrained_values("zeroshot")
    for grid in ("testbed.yaml", "testbed-plus-goals.yaml"):
        spec = load_sweep(REPO / "configs/sweeps" / grid, out_dir="/tmp/unused", overrides=["optim.lr=0.01"])
        runs = expand_sweep(spec)
        zeroshot = [flatten_tree(to_dict(r.config)) for r in runs if r.config.method.name == "zeroshot"]
        assert zeroshot and all({key: c[key] for key in held} == held for c in zeroshot)
        coop = {
            (r.config.optim.epochs, r.config.optim.lr, r.config.data.augment)
            for r in runs
            if r.config.method.name == "coop"
        }
        assert coop == {(30, 0.01, False)}


def test_one_configuration_is_one_run_and_where_a_run_runs_is_a_configuration(tmp_path, caplog) -> None:
    # zero-shot under a schedule axis it does not read, two spellings of one backbone: run once (the report would
    # otherwise hold two finished runs of one label); an axis over threads times the same runs: kept apart
    body = {"grid": {"method": ["zeroshot", "coop"], "optim.epochs": [10, 30], "run.seed": [1]}}
    with caplog.at_level("WARNING", logger="visprompt.sweep.grid"):
        runs = expand_sweep(load_sweep(write_grid(tmp_path, body), out_dir=tmp_path / "runs"))
    assert sorted(r.name.split("/", 2)[1] + "/" + r.name.split("/")[-2] for r in runs) == [
        "coop/optim.epochs-10", "coop/optim.epochs-30", "zeroshot/optim.epochs-10"]  # fmt: skip
    assert "({optim.epochs=10} and {optim.epochs=30} resolve to one configuration): run once, as" in caplog.text
    backbones = expand_sweep(load_sweep(write_grid(tmp_path, {"grid": {"backbone": ["rn50", "RN50-quickgelu"]}})))
    assert len(backbones) == 1
    threads = expand_sweep(load_sweep(write_grid(tmp_path, {"grid": {"run.threads": [1, 2]}})))
    assert sorted(r.config.run.threads for r in threads) == [1, 2]


def test_missing_ray_is_a_one_line_error(tmp_path, monkeypatch) -> None:
    import sys

    from visprompt.errors import VispromptError
    from visprompt.sweep import run_sweep

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    runs = expand_sweep(load_sweep(write_grid(tmp_path, {}), out_dir=tmp_path / "runs"))
    with pytest.raises(VispromptError, match=r"not installed: pip install 'visprompt\[sweep\]'"):
        run_sweep(runs, print)


def test_a_finished_sweep_returns_without_starting_ray(tmp_path, monkeypatch) -> None:
    import sys

    from visprompt.config import to_yaml
    from visprompt.sweep import run_sweep

    monkeypatch.setitem(sys.modules, "ray", None)  # starting Ray would fail
    runs = expand_sweep(load_sweep(write_grid(tmp_path, {"grid": {"run.seed": [1, 2]}}), out_dir=tmp_path / "runs"))
    for run in runs:
        run.path.mkdir(parents=True)
        (run.path / "status").write_text("done\n")
        (run.path / "config.yaml").write_text(to_yaml(run.config))  # a done run without it is refused
    result = run_sweep(runs, print)
    assert result.ok and [o.status for o in result.outcomes] == ["skipped", "skipped"]
    assert (tmp_path / "runs" / "sweep.json").is_file()


def test_dry_run_shows_finished_runs_the_sweep_would_refuse_as_stale(tmp_path, capsys) -> None:
    """The bug this guards against: ``--dry-run`` printed ``done`` for a finished run made with other settings, which
    the sweep itself refuses; the inputs check runs too, without loading a backbone."""
    import argparse
    import json

    from visprompt.commands import sweep as sweep_command
    from visprompt.config import to_yaml
    from visprompt.data.datasets import load_dataset
    from visprompt.data.pipeline import splits_fingerprint
    from visprompt.engine.inputs import FORMAT, INPUTS_FILE
    from visprompt.sweep import refuse_stale
    from visprompt.sweep.state import check_finished

    data = make_folder_dataset(tmp_path / "images")
    grid = write_grid(
        tmp_path, {"base": {"dataset": "folder", "data.path": str(data)}, "grid": {"run.seed": [1, 2, 3, 4, 5]}}
    )
    runs = expand_sweep(load_sweep(grid, out_dir=tmp_path / "runs"))
    d = runs[0].config.data
    fingerprint = splits_fingerprint(load_dataset(d.dataset, d.root, d.path))
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"1234")
    epochs = runs[0].config.optim.epochs
    for run, saved_epochs, saved_data, files in [
        (runs[0], epochs, fingerprint, []),  # done
        (runs[1], epochs + 1, fingerprint, []),  # other settings
        (runs[2], epochs, "0" * 16, []),  # relabelled since
        (runs[3], epochs, fingerprint, [{"path": str(weights), "size": 3, "mtime_ns": 1}]),  # weights file replaced
    ]:
        run.path.mkdir(parents=True)
        (run.path / "status").write_text("done\n")
        saved = dataclasses.replace(run.config, optim=dataclasses.replace(run.config.optim, epochs=saved_epochs))
        (run.path / "config.yaml").write_text(to_yaml(saved))
        record = {"format": FORMAT, "data": saved_data, "backbone": "never compared here", "files": files}
        (run.path / INPUTS_FILE).write_text(json.dumps(record))
    parser = argparse.ArgumentParser()
    sweep_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["sweep", str(grid), "--out", str(tmp_path / "runs"), "--dry-run"])
    assert args.func(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:5] == [
        f"done     {runs[0].name}",
        f"stale    {runs[1].name}: optim.epochs {epochs + 1} -> {epochs}",
        f"stale    {runs[2].name}: the images or labels of data.dataset folder (data.path {data}) changed since",
        f"done     {runs[3].name}",
        f"pending  {runs[4].name}",
    ]
    assert lines[6].startswith("2 stale runs: finished with other settings or inputs than the grid gives now, so the "
                               "sweep would refuse to start; delete those run directories")  # fmt: skip
    assert lines[7].startswith(f"1 finished runs' backbone files changed size or time since, e.g. {runs[3].name}: ")
    refuse_stale(runs[:1], "sweep", "remedy")
    for run in runs[1:3]:  # as the sweep refuses them
        with pytest.raises(ConfigError, match=f"1 finished runs do not match .* e.g. {run.name}: "):
            refuse_stale([run], "sweep", "remedy")
    data.rename(tmp_path / "moved")  # not mounted here: nothing to compare with, kept as done (with a warning)
    stale, _ = check_finished(runs)
    assert runs[0].name not in stale and runs[1].name in stale
    refuse_stale(runs[:1], "sweep", "remedy")


def test_progress_display_bar_and_plain_lines(capsys) -> None:
    from visprompt.sweep import SweepProgress
    from visprompt.sweep.progress import ProgressDisplay

    bar = ProgressDisplay(interactive=True)
    bar(SweepProgress(total=4, done=1, running=2, failed=0, remaining=1, skipped=1))
    bar(SweepProgress(total=4, done=3, running=0, failed=1, remaining=0, skipped=1))
    bar.close()
    assert bar.bar.n == 4 and "running 0, failed 1, remaining 0" in capsys.readouterr().err
    lines = ProgressDisplay(interactive=False)
    for _ in range(2):  # an unchanged count prints nothing
        lines(SweepProgress(total=4, done=1, running=2, failed=0, remaining=1, skipped=1))
    assert capsys.readouterr().err == "sweep: done 1/4, running 2, failed 0, remaining 1\n"


def test_a_method_name_axis_gives_each_run_its_methods_recipe(tmp_path) -> None:
    """The bug this guards against: an axis over method.name trained every method with VisPrompt's recipe."""
    grid = {"base": {"data.dataset": "dtd"}, "grid": {"method.name": METHODS.names()}}
    runs = expand_sweep(load_sweep(write_grid(tmp_path, grid)))
    assert [r.config.method.name for r in runs] == METHODS.names()
    for run in runs:
        flat = flatten_tree(to_dict(run.config))
        recipe = METHODS.get(run.config.method.name).recipe
        assert {k: flat[k] for k in recipe} == dict(recipe)


def test_runs_that_differ_in_any_noise_field_get_their_own_directory_and_report_label() -> None:
    from visprompt.engine.build import run_name

    specs = [
        NoiseSpec("pairs-per-class", false_per_class=2),
        NoiseSpec("pairs-per-class", false_per_class=2, pair_flip=True),
        NoiseSpec("open-set", 0.25, open_set_classes=1),
        NoiseSpec("open-set", 0.25, open_set_classes=2),
        NoiseSpec("sym", 0.25),
        NoiseSpec("asym", 0.25),
    ]
    names = [run_name(dataclasses.replace(load_config(), noise=spec)) for spec in specs]
    assert len(set(names)) == len(specs)
    assert len({spec.label for spec in specs}) == len(specs)
