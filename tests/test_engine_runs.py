"""End to end: every method trains on a tiny fabricated dataset with a tiny random CLIP; resume is exact."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from visprompt.config import NoiseSpec, flatten_tree, load_config
from visprompt.engine import load_run, train_run
from visprompt.methods import METHODS
from worlds import COLOURS, tiny_world


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    return tiny_world(tmp_path_factory.mktemp("engine"))


def config(world: dict[str, Path], method: str, out: Path, *overrides: str):
    base = [
        "data.dataset=folder", f"data.path={world['data']}", "data.shots=4", "data.augment=false",
        f"backbone.arch={world['arch']}", "backbone.weights=null", "noise.type=sym", "noise.rate=0.25",
        "optim.epochs=2", "optim.batch_size=4", "optim.eval_batch_size=8",
        "run.device=cpu", f"run.out_dir={out}", "run.name=run",
    ]  # fmt: skip
    if method != "zeroshot":  # zero-shot has no prompt to shorten (and refuses a prompt field it would not read)
        base.append("prompt.n_ctx=4")
    return load_config(overrides=[*base, *overrides], method=method)


LOG_FIELDS = {"epoch", "lr", "loss", "epoch_time"}
METRIC_FIELDS = {"top1", "macro_f1", "per_class_accuracy", "timings", "trainable_parameters", "parameters",
                 "versions", "git_sha", "num_test", "epochs", "environment", "train_noise"}  # fmt: skip


@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_trains_end_to_end(world, tmp_path, method: str) -> None:
    epochs = 2 if method == "joapr" else 1  # JoAPR: a warm-up epoch, then one with its GMM split
    overrides = [f"optim.epochs={epochs}", *(["optim.batch_size=2"] if method == "cocoop" else [])]
    cfg = config(world, method, tmp_path, *overrides)
    result = train_run(cfg, show_progress=False)
    rd = result.run_dir
    assert {p.name for p in rd.iterdir()} >= {"config.yaml", "split.json", "log.jsonl", "metrics.json",
                                              "checkpoint.safetensors", "status"}  # fmt: skip
    assert (rd / "status").read_text().strip() == "done"
    assert load_config([rd / "config.yaml"]) == cfg
    split = json.loads((rd / "split.json").read_text())
    assert len(split["train"]["label"]) == 12 and len(split["test"]["label"]) == 9
    metrics = json.loads((rd / "metrics.json").read_text())
    assert set(metrics) >= METRIC_FIELDS
    assert metrics["train_noise"]["num_noisy"] == 3 == split["stats"]["num_noisy"]  # floor(0.25 x 12), as realised
    env = metrics["environment"]  # what decides the run's last digits (docs/reliability.md, "Reproducibility")
    assert env["compute"].startswith("cpu threads=") and " isa=" in env["compute"] and "cpu" in env
    per_class = metrics["per_class_accuracy"]
    assert set(per_class) == set(COLOURS)  # 3 test images per class: top-1 is the mean of the per-class accuracies
    assert metrics["top1"] == pytest.approx(sum(per_class.values()) / len(per_class), abs=1e-6)
    saved = flatten_tree(yaml.safe_load((rd / "config.yaml").read_text()))
    recipe = {k: v for k, v in METHODS.get(method).recipe.items() if k.startswith("method.")}
    assert {k: saved[k] for k in recipe} == recipe  # the run trained exactly its method's recipe
    log = [json.loads(line) for line in (rd / "log.jsonl").read_text().splitlines()]
    from safetensors.torch import load_file

    params = load_file(rd / "checkpoint.safetensors")
    if method == "zeroshot":
        assert log == [] and params == {} and metrics["trainable_parameters"] == 0
        return
    assert [r["epoch"] for r in log] == list(range(1, epochs + 1)) and all(set(r) >= LOG_FIELDS for r in log)
    assert all(np.isfinite(r["loss"]) for r in log)
    # visprompt-plus also saves its adapted zero-shot prior weight (a 0-dim buffer), which is not trained
    learned = {k: v for k, v in params.items() if not k.endswith("prior_scale")}
    assert sum(v.numel() for v in learned.values()) == metrics["trainable_parameters"] > 0
    assert len(params) - len(learned) == (method == "visprompt-plus")
    if method in ("visprompt", "nlprompt"):
        assert {"n_clean", "sel_precision", "sel_recall", "ot_iterations"} <= set(log[-1])
    if method == "visprompt":
        assert {"gate_mean", "gate_std"} <= set(log[-1])
    if method == "joapr":
        assert "n_clean" in log[-1]  # the GMM split of the second epoch (the first is the warm-up)
    # a finished run is skipped
    again = train_run(cfg, show_progress=False)
    assert again.skipped and again.metrics == metrics


class Crash(RuntimeError):
    pass


def _crash_after(k: int):
    def hook(epoch: int, record: dict) -> None:
        if epoch == k:
            raise Crash(f"killed after epoch {epoch}")

    return hook


def _comparable(rd: Path) -> tuple[dict, list[dict]]:
    metrics = json.loads((rd / "metrics.json").read_text())
    log = [json.loads(line) for line in (rd / "log.jsonl").read_text().splitlines()]
    keep = ("top1", "macro_f1", "per_class_accuracy")
    return {k: metrics[k] for k in keep}, [{k: v for k, v in r.items() if k != "epoch_time"} for r in log]


@pytest.mark.parametrize(
    ("method", "kill_after", "overrides"),
    [
        ("visprompt", 1, ("data.augment=true",)),  # images, augmentation, attention dropout: the RNG state matters
        ("joapr", 2, ()),  # method state (loss history, adaptive threshold) must survive the restart
        ("nlprompt", 1, ("method.loss.schedule=sequential",)),
    ],
)
def test_killed_run_resumes_to_identical_metrics(world, tmp_path, method: str, kill_after: int, overrides) -> None:
    settings = ("optim.epochs=3", *overrides)
    full = train_run(config(world, method, tmp_path / "full", *settings), show_progress=False)
    cfg = config(world, method, tmp_path / "killed", *settings)
    with pytest.raises(Crash):
        train_run(cfg, on_epoch_end=_crash_after(kill_after), show_progress=False)
    rd = tmp_path / "killed" / "run"
    assert (rd / "status").read_text().strip() == "failed" and "Crash" in (rd / "error.txt").read_text()
    logged = [json.loads(x)["epoch"] for x in (rd / "log.jsonl").read_text().splitlines()]
    assert logged == list(range(1, kill_after + 1))
    resumed = train_run(cfg, show_progress=False)
    assert resumed.resumed_from == kill_after and full.resumed_from is None
    assert _comparable(rd) == _comparable(full.run_dir)


def test_a_run_killed_between_its_checkpoint_and_state_writes_resumes_from_the_state(world, tmp_path) -> None:
    full = train_run(config(world, "coop", tmp_path / "full", "optim.epochs=2"), show_progress=False)
    cfg = config(world, "coop", tmp_path / "killed", "optim.epochs=2")
    rd = tmp_path / "killed" / "run"
    saved: dict[int, bytes] = {}

    def hook(epoch: int, record: dict) -> None:
        saved[epoch] = (rd / "state.pt").read_bytes()
        if epoch == 2:
            raise Crash("killed after epoch 2")

    with pytest.raises(Crash):
        train_run(cfg, on_epoch_end=hook, show_progress=False)
    (rd / "state.pt").write_bytes(saved[1])  # epoch 2's checkpoint is on disk, its state never was
    resumed = train_run(cfg, show_progress=False)
    assert resumed.resumed_from == 1  # one epoch lost, not the run
    assert _comparable(rd) == _comparable(full.run_dir)


def test_a_run_resumed_in_another_environment_says_so(world, tmp_path, caplog) -> None:
    """A run's last digits depend on the machine (docs/reliability.md, "Reproducibility"): one resumed on another
    kind of machine records both environments, in order, and the report labels it as such."""
    from visprompt.engine.provenance import environment_label
    from visprompt.report import collect_runs
    from visprompt.report.tables import environment_of

    cfg = config(world, "coop", tmp_path / "runs", "optim.epochs=2")
    with pytest.raises(Crash):
        train_run(cfg, on_epoch_end=_crash_after(1), show_progress=False)
    rd = tmp_path / "runs" / "run"
    state = torch.load(rd / "state.pt", weights_only=True)
    here = environment_label(torch.device("cpu"))
    assert state["environments"] == [here]
    state["environments"] = ["Some CPU, cpu threads=8 isa=AVX2, torch 2.9.1"]  # as if it had run there
    torch.save(state, rd / "state.pt")
    with caplog.at_level("WARNING", logger="visprompt.engine.runner"):
        train_run(cfg, show_progress=False)
    assert "trained in another environment" in caplog.text
    env = json.loads((rd / "metrics.json").read_text())["environment"]
    assert env["trained_in"] == ["Some CPU, cpu threads=8 isa=AVX2, torch 2.9.1", here]
    (record,) = collect_runs(tmp_path / "runs")
    assert (
        environment_of(record)
        == f"Some CPU, cpu threads=8 isa=AVX2, torch 2.9.1 then {here} (resumed in another environment)"
    )

    cfg = config(world, "coop", tmp_path / "same", "optim.epochs=2")  # resumed where it ran: one environment
    with pytest.raises(Crash):
        train_run(cfg, on_epoch_end=_crash_after(1), show_progress=False)
    train_run(cfg, show_progress=False)
    env = json.loads((tmp_path / "same" / "run" / "metrics.json").read_text())["environment"]
    assert "trained_in" not in env and env["compute"] in here


def test_timings_count_the_training_images_encoding_once(world, tmp_path, monkeypatch) -> None:
    # with augmented images, NLPrompt's full-set split encodes the training images inside epoch 1: that second is
    # features_s and not also the epoch's (was: in both, total_s longer than the run)
    import visprompt.engine.runner as runner

    encode = runner.encode_samples

    def slow_encode(*args, **kwargs):
        time.sleep(1.0)
        return encode(*args, **kwargs)

    monkeypatch.setattr(runner, "encode_samples", slow_encode)
    cfg = config(world, "nlprompt", tmp_path, "data.augment=true", "optim.epochs=2", "run.feature_store=null")
    started = time.perf_counter()
    result = train_run(cfg, show_progress=False)
    wall = time.perf_counter() - started
    t = result.metrics["timings"]
    log = [json.loads(line) for line in (result.run_dir / "log.jsonl").read_text().splitlines()]
    assert t["features_s"] >= 1.0 and t["train_s"] == pytest.approx(sum(r["epoch_time"] for r in log))
    assert t["total_s"] == pytest.approx(t["setup_s"] + t["features_s"] + t["train_s"] + t["eval_s"])
    assert t["total_s"] <= wall  # every second counted once
    assert t["epoch_mean_s"] == pytest.approx(t["train_s"] / 2)


def test_a_changed_config_does_not_resume_into_an_old_run(world, tmp_path) -> None:
    from visprompt.errors import ConfigError

    cfg = config(world, "coop", tmp_path)
    with pytest.raises(Crash):
        train_run(cfg, on_epoch_end=_crash_after(1), show_progress=False)
    with pytest.raises(ConfigError, match="other settings"):
        train_run(config(world, "coop", tmp_path, "optim.lr=0.01"), show_progress=False)


def test_run_threads_sets_torchs_threads_and_a_resume_may_change_them(world, tmp_path) -> None:
    from visprompt.errors import ConfigError

    before = torch.get_num_threads()
    try:
        with pytest.raises(Crash):
            train_run(
                config(world, "coop", tmp_path, "run.threads=1"), on_epoch_end=_crash_after(1), show_progress=False
            )
        assert torch.get_num_threads() == 1
        result = train_run(config(world, "coop", tmp_path, "run.threads=2"), show_progress=False)
        assert result.status == "done" and torch.get_num_threads() == 2  # threads are where it runs, not what
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ConfigError, match=r"run.threads: expected an integer >= 0"):
        config(world, "coop", tmp_path, "run.threads=-1")


def test_eval_and_predict_reload_the_trained_prompt(world, tmp_path) -> None:
    cfg = config(world, "coop", tmp_path)
    result = train_run(cfg, show_progress=False)
    loaded = load_run(result.run_dir, device="cpu")
    logits = loaded.logits(loaded.splits.test)
    labels = torch.tensor([s.label for s in loaded.splits.test])
    top1 = 100.0 * float((logits.argmax(-1) == labels).float().mean())
    assert top1 == pytest.approx(result.metrics["top1"])
    assert yaml.safe_load((result.run_dir / "config.yaml").read_text())["method"]["name"] == "coop"


def test_the_python_apis_run_reloads_a_model_its_run_has_moved_past(world, tmp_path) -> None:
    """A ``Run`` loaded mid-run gives the finished (then the restarted) run's model and config, never the old ones."""
    import visprompt

    cfg = config(world, "coop", tmp_path, "optim.epochs=4")
    with pytest.raises(Crash):
        train_run(cfg, on_epoch_end=_crash_after(1), show_progress=False)
    run = visprompt.load_run(tmp_path / "run", device="cpu", partial=True)
    run.evaluate()
    early = run.model().logits(run.model().splits.test)
    result = train_run(cfg, show_progress=False)  # finished in the same process
    assert run.status == "done"
    logits = run.model().logits(run.model().splits.test)
    assert not torch.equal(logits, early)  # three more epochs moved the prompt
    assert torch.equal(logits, visprompt.load_run(result.run_dir, device="cpu").model().logits(run.model().splits.test))
    assert run.evaluate()["top1"] == pytest.approx(run.metrics["top1"])
    train_run(config(world, "coop", tmp_path, "optim.epochs=1"), restart=True, show_progress=False)
    assert run.config.optim.epochs == 1 and run.model().cfg.optim.epochs == 1


@pytest.mark.parametrize("kind", ["asym-semantic", "instance", "open-set"])
def test_clip_dependent_and_open_set_noise_train_end_to_end(world, tmp_path, kind: str) -> None:
    """Two epochs per new noise type; split.json holds the realised noise the frozen CLIP (or held-out classes) made."""
    import hashlib

    from visprompt.data.noise import apply_noise
    from visprompt.data.records import Sample
    from visprompt.engine.build import input_size, load_clip
    from visprompt.engine.noise_inputs import image_features, semantic_targets
    from visprompt.engine.runtime import resolve_precision
    from visprompt.engine.store import backbone_checksum

    extra = ["noise.open_set_classes=1"] if kind == "open-set" else []
    cfg = config(world, "coop", tmp_path, f"noise.type={kind}", "noise.rate=0.25", *extra)
    result = train_run(cfg, show_progress=False)
    assert result.status == "done" and result.metrics["epochs"] == 2
    split = json.loads((result.run_dir / "split.json").read_text())
    labels, truth = split["train"]["label"], split["train"]["true_label"]
    noisy = [y != t for y, t in zip(labels, truth, strict=True)]
    assert split["stats"]["num_noisy"] == sum(noisy)
    cached = [f.name for f in (tmp_path / ".splits").iterdir()]
    if kind == "open-set":
        assert len(split["classnames"]) == 2 == result.metrics["num_classes"] and len(labels) == 8
        assert sum(t == 2 for t in truth) == 2 == sum(noisy) == split["stats"]["num_open_set"]  # floor(0.25 * 8)
        assert set(split["test"]["label"]) == {0, 1} and len(split["test"]["label"]) == 6
        assert cached == ["folder-" + cached[0].split("-")[1] + "-4shot-seed1-open-set-0.25-k1.json"]
        return
    checksum = backbone_checksum(load_clip(cfg, torch.device("cpu")))  # what the weights are, not their path
    source = f"{world['arch']}|{checksum}" + ("|a photo of a {}." if kind == "asym-semantic" else "")
    key = hashlib.sha256(source.encode()).hexdigest()[:8]
    assert len(cached) == 1 and cached[0].endswith(f"-{kind}-0.25-{key}.json")  # the backbone (and the template)
    clip = load_clip(cfg, torch.device("cpu"))
    if kind == "asym-semantic":
        targets = semantic_targets(clip, split["classnames"], "folder")
        assert sum(noisy) == 3 and all(y == targets[t] for y, t, n in zip(labels, truth, noisy, strict=True) if n)
        return
    from visprompt.data.transforms import build_transform

    clean = [Sample(i, f"{split['root']}/{p}", t, t, split["classnames"][t])
             for i, p, t in zip(split["train"]["index"], split["train"]["path"], truth, strict=True)]  # fmt: skip
    tf = build_transform(input_size(clip), clip.mean, clip.std, train=False)
    feats = image_features(clip, clean, tf, batch_size=8, device=torch.device("cpu"),
                           precision=resolve_precision("fp32", torch.device("cpu")))  # fmt: skip
    again = apply_noise(clean, split["classnames"], NoiseSpec("instance", 0.25), seed=cfg.run.seed, features=feats)
    assert [s.label for s in again] == labels  # the engine drew the noise from these images' features
