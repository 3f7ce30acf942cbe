"""Engine units: schedule, run directory, metrics, meter, runtime (device, precision, RNG)."""

from __future__ import annotations

import io
import json
import math
import random

import numpy as np
import pytest
import torch

from visprompt.engine.loop import EpochMeter, epoch_seed
from visprompt.engine.metrics import classification_metrics
from visprompt.engine.optim import build_optimizer, build_scheduler, lr_at
from visprompt.engine.rundir import RunDir
from visprompt.engine.runtime import get_rng_state, resolve_device, resolve_precision, seed_everything, set_rng_state
from visprompt.errors import ConfigError
from visprompt.fileio import atomic_path

# ------------------------------------------------------------------------------------------------ schedule


def _dassl_rates(lr: float, epochs: int, warmup: int, warmup_lr: float) -> list[float]:
    """Dassl's ConstantWarmupScheduler around CosineAnnealingLR(T_max=epochs), stepped once per epoch."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=float(epochs))
    rates, last_epoch = [], 0
    for group in opt.param_groups:
        group["lr"] = warmup_lr if warmup > 0 else lr
    for _ in range(epochs):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        if last_epoch >= warmup:  # the successor counts from 0 after the warm-up
            cosine.step()
        else:
            last_epoch += 1
            if last_epoch >= warmup:
                for group in opt.param_groups:
                    group["lr"] = cosine.get_last_lr()[0]
    return rates


@pytest.mark.parametrize(("epochs", "warmup"), [(10, 1), (5, 0), (7, 2)])
def test_schedule_matches_dassl_constant_warmup_cosine(epochs: int, warmup: int) -> None:
    ours = [lr_at(e, lr=0.002, epochs=epochs, warmup_epochs=warmup, warmup_lr=1e-5) for e in range(epochs)]
    assert ours == pytest.approx(_dassl_rates(0.002, epochs, warmup, 1e-5), rel=1e-9, abs=1e-15)
    if warmup:
        assert ours[0] == 1e-5 and ours[warmup] == pytest.approx(0.002)
    assert ours[-1] > 0  # the period is the full E epochs: the last rate is small, not zero


def test_scheduler_steps_per_epoch_and_resumes_from_its_state() -> None:
    p = torch.nn.Parameter(torch.zeros(3))
    opt = build_optimizer([p], lr=0.1, momentum=0.9, weight_decay=5e-4)
    sched = build_scheduler(opt, epochs=6, warmup_epochs=1, warmup_lr=1e-3)
    seen = []
    for _ in range(3):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    state, opt_state = sched.state_dict(), opt.state_dict()
    opt2 = build_optimizer([torch.nn.Parameter(torch.zeros(3))], lr=0.1)
    sched2 = build_scheduler(opt2, epochs=6, warmup_epochs=1, warmup_lr=1e-3)
    opt2.load_state_dict(opt_state)
    sched2.load_state_dict(state)
    for _ in range(3, 6):
        seen.append(opt2.param_groups[0]["lr"])
        opt2.step()
        sched2.step()
    assert seen == pytest.approx([lr_at(e, lr=0.1, epochs=6, warmup_epochs=1, warmup_lr=1e-3) for e in range(6)])


def test_a_scaled_group_follows_the_schedule_at_its_multiple() -> None:
    base, gate = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer([{"params": [base], "lr_scale": 1.0}, {"params": [gate], "lr_scale": 10.0}], lr=0.1)
    sched = build_scheduler(opt, epochs=5, warmup_epochs=1, warmup_lr=1e-3)
    for e in range(5):
        want = lr_at(e, lr=0.1, epochs=5, warmup_epochs=1, warmup_lr=1e-3)
        assert opt.param_groups[0]["lr"] == pytest.approx(want)
        assert opt.param_groups[1]["lr"] == pytest.approx(10 * want)
        opt.step()
        sched.step()
    only_scaled = build_optimizer([{"params": [gate], "lr_scale": 4.0}], lr=0.1)
    build_scheduler(only_scaled, epochs=5, warmup_epochs=0)
    assert only_scaled.param_groups[0]["lr"] == pytest.approx(0.4)  # the base rate is recovered from the scale
    with pytest.raises(ValueError, match="lr_scale"):
        build_optimizer([{"params": [base], "lr_scale": 0.0}], lr=0.1)


def test_optimizer_refuses_frozen_or_no_parameters() -> None:
    with pytest.raises(ValueError, match="no trainable"):
        build_optimizer([], lr=0.1)
    with pytest.raises(ValueError, match="require gradients"):
        build_optimizer([torch.nn.Parameter(torch.zeros(1), requires_grad=False)], lr=0.1)


# ---------------------------------------------------------------------------------------------- run directory


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path) -> None:
    rd = RunDir(tmp_path / "run")
    rd.write_json("metrics.json", {"top1": 1.0})
    with pytest.raises(RuntimeError), atomic_path(rd.metrics_file) as tmp:
        tmp.write_text("{half")
        raise RuntimeError("killed mid-write")
    assert rd.read_json("metrics.json") == {"top1": 1.0}
    assert sorted(p.name for p in rd.path.iterdir()) == ["metrics.json"]  # no temporary file left


def test_status_log_and_checkpoint_roundtrip(tmp_path) -> None:
    rd = RunDir(tmp_path / "run")
    assert rd.status() is None and rd.load_state() is None
    rd.set_status("running")
    for epoch in (1, 2, 3):
        rd.append_log({"epoch": epoch, "loss": 1.0 / epoch})
    rd.truncate_log(2)
    assert [r["epoch"] for r in rd.read_log()] == [1, 2]
    params = {"learner.ctx": torch.randn(4, 8), "learner.film.w": torch.randn(3)}
    rd.save_checkpoint(params, 2, {"optimizer": {"x": torch.ones(2)}})
    loaded = rd.load_checkpoint()
    assert set(loaded) == set(params) and all(torch.equal(loaded[k], params[k]) for k in params)
    state = rd.load_state()
    assert state["epoch"] == 2 and torch.equal(state["optimizer"]["x"], torch.ones(2))
    rd.set_status("failed", error="ValueError: boom")
    assert rd.status() == "failed" and "boom" in rd.error_file.read_text()
    rd.set_status("done")
    assert rd.is_done() and not rd.error_file.exists()
    with pytest.raises(ValueError):
        rd.set_status("finished")


def test_a_checkpoint_ahead_of_its_state_resumes_from_the_states_own_parameters(tmp_path) -> None:
    rd = RunDir(tmp_path / "run")
    rd.save_checkpoint({"a": torch.zeros(1)}, 1, {})
    state_bytes = rd.state_file.read_bytes()
    rd.save_checkpoint({"a": torch.ones(1)}, 2, {})
    rd.state_file.write_bytes(state_bytes)  # as if killed between the two writes of epoch 2
    state = rd.load_state()
    assert rd.checkpoint_epoch() == 2 and state["epoch"] == 1 and torch.equal(state["params"]["a"], torch.zeros(1))
    buffer = io.BytesIO()
    torch.save({"epoch": 1}, buffer)  # a state written before states carried their parameters
    rd.state_file.write_bytes(buffer.getvalue())
    assert rd.load_state() is None  # cannot be resumed exactly: a fresh start


def test_torn_log_line_is_dropped(tmp_path) -> None:
    rd = RunDir(tmp_path)
    rd.log_file.write_text(json.dumps({"epoch": 1}) + "\n" + '{"epoch": 2, "lo')
    assert rd.read_log() == [{"epoch": 1}]


# ---------------------------------------------------------------------------------------------------- metrics


def test_metrics_match_scikit_learn() -> None:
    from sklearn.metrics import accuracy_score, f1_score, recall_score

    gen = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 5, (200,), generator=gen)
    preds = torch.where(torch.rand(200, generator=gen) < 0.6, labels, torch.randint(0, 5, (200,), generator=gen))
    preds[preds == 4] = 3  # class 4 is never predicted: its F1 is 0 and still counts in the macro average
    names = ["a", "b", "c", "d", "e"]
    m = classification_metrics(preds, labels, names)
    assert m["top1"] == pytest.approx(100 * accuracy_score(labels, preds))
    assert m["macro_f1"] == pytest.approx(100 * f1_score(labels, preds, average="macro", zero_division=0))
    per_class = 100 * recall_score(labels, preds, average=None, zero_division=0)
    assert [m["per_class_accuracy"][n] for n in names] == pytest.approx(per_class.tolist())
    assert m["num_samples"] == 200


def test_metrics_perfect_and_absent_classes() -> None:
    labels = torch.tensor([0, 0, 2, 2])
    m = classification_metrics(labels.clone(), labels, ["x", "y", "z"])
    assert m["top1"] == 100.0 and m["macro_f1"] == 100.0
    assert set(m["per_class_accuracy"]) == {"x", "z"}  # no test sample of "y": no accuracy for it


def test_meter_sums_counts_and_averages_the_rest() -> None:
    meter = EpochMeter()
    meter.update({"loss": torch.tensor(2.0), "n_clean": 3, "sel_hits": 2, "sel_selected": 3, "sel_true_clean": 4}, n=4)
    meter.update({"loss": 1.0, "n_clean": 1, "sel_hits": 1, "sel_selected": 1, "sel_true_clean": 1}, n=2)
    s = meter.summary()
    assert s["loss"] == pytest.approx((2 * 4 + 1 * 2) / 6)
    assert s["n_clean"] == 4 and s["sel_precision"] == pytest.approx(3 / 4) and s["sel_recall"] == pytest.approx(3 / 5)


def test_the_logged_part_losses_are_means_over_each_parts_samples() -> None:
    # a batch's clean-part loss is a mean over its clean rows: weighted by the batch size, a batch with 1 clean
    # sample counted as much as one with 15 (was: the logged loss_clean was no mean over the epoch's clean samples)
    from visprompt.losses import per_sample_loss
    from visprompt.methods.objective import SplitLoss

    loss, gen, meter = SplitLoss(clean="ce", noisy="gce", alpha=0.5), torch.Generator().manual_seed(0), EpochMeter()
    per_clean, per_noisy, totals = [], [], []
    for n_clean in (1, 15):
        logits, labels = 3 * torch.randn(16, 5, generator=gen), torch.randint(0, 5, (16,), generator=gen)
        clean = torch.arange(16) < n_clean
        total, parts = loss(logits, labels, clean)
        meter.update({"loss": total, **parts}, n=16)
        totals.append(float(total))
        per_clean.append(per_sample_loss("ce", logits, labels)[clean])
        per_noisy.append(per_sample_loss("gce", logits, labels, q=0.5)[~clean])
        # the training loss is unchanged: alpha * sum CE(clean) + (1 - alpha) * sum GCE(noisy), over B
        assert float(total) == pytest.approx(float(0.5 * per_clean[-1].sum() + 0.5 * per_noisy[-1].sum()) / 16)
        assert parts["loss_clean"] == pytest.approx(float(per_clean[-1].mean()))  # a float to every other reader
    summary = meter.summary()
    assert summary["loss_clean"] == pytest.approx(float(torch.cat(per_clean).mean()))
    assert summary["loss_noisy"] == pytest.approx(float(torch.cat(per_noisy).mean()))
    assert summary["loss"] == pytest.approx(sum(totals) / 2)  # the step loss: still by batch size


def test_meter_refuses_a_fraction_under_a_count_prefix_instead_of_logging_it_truncated() -> None:
    meter = EpochMeter()
    with pytest.raises(ValueError, match="'sel_reject_conc' is a count"):
        meter.update({"sel_reject_conc": 0.42})
    meter.update({"reject_conc": 0.42, "n_clean": 3.0}, n=2)  # a whole float count is fine
    assert meter.summary() == {"reject_conc": pytest.approx(0.42), "n_clean": 3}


def test_epoch_seeds_differ_by_epoch_and_seed() -> None:
    seeds = {epoch_seed(s, e) for s in range(3) for e in range(50)}
    assert len(seeds) == 150


# ---------------------------------------------------------------------------------------------------- runtime


def test_device_and_precision_resolution() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match=r"run\.device"):
        resolve_device("tpu:0")
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu).name == "fp32" and not resolve_precision("auto", cpu).needs_scaler
    assert resolve_precision("bf16", cpu).dtype is torch.bfloat16
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", cpu)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
    else:  # pragma: no cover - GPU machines
        assert resolve_precision("auto", torch.device("cuda")).name == "bf16"
        assert resolve_precision("fp16", torch.device("cuda")).needs_scaler


def test_bf16_autocast_on_cpu_runs_matmuls_in_bf16() -> None:
    p = resolve_precision("bf16", torch.device("cpu"))
    with p.autocast():
        out = torch.randn(2, 3) @ torch.randn(3, 4)
    assert out.dtype is torch.bfloat16
    with resolve_precision("fp32", torch.device("cpu")).autocast():
        assert (torch.randn(2, 3) @ torch.randn(3, 4)).dtype is torch.float32


def test_rng_state_roundtrip_covers_python_numpy_torch() -> None:
    seed_everything(7)
    state = get_rng_state()
    first = (random.random(), float(np.random.rand()), float(torch.rand(())))
    seed_everything(123)
    set_rng_state(state)
    again = (random.random(), float(np.random.rand()), float(torch.rand(())))
    assert first == again
    assert not math.isnan(first[0])


def test_the_testbed_backbone_goes_through_the_testbed_loader(monkeypatch) -> None:
    import visprompt.testbed
    from visprompt.config import load_config
    from visprompt.engine.build import load_clip

    calls = []
    monkeypatch.setattr(
        visprompt.testbed, "load_testbed_clip", lambda device, directory=None: calls.append((device, directory))
    )
    load_clip(load_config([], ["backbone.arch=testbed", "backbone.weights=/some/folder"]), torch.device("cpu"))
    load_clip(load_config([], ["backbone.arch=testbed", "backbone.weights=null"]), torch.device("cpu"))
    assert calls == [(torch.device("cpu"), "/some/folder"), (torch.device("cpu"), None)]


def _feature_data(n: int = 8, dim: int = 4):
    from visprompt.data.records import Sample
    from visprompt.engine.data import FeatureData, FeatureSet

    samples = [
        Sample(index=i, path=f"/x/{i}.png", label=i % 2, true_label=i % 2, classname="ab"[i % 2]) for i in range(n)
    ]
    features = FeatureSet(torch.randn(n, dim, generator=torch.Generator().manual_seed(0)), None)
    precision = resolve_precision("fp32", torch.device("cpu"))
    return FeatureData(samples, features, device=torch.device("cpu"), precision=precision, eval_batch_size=4), precision


class _Probe(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(4, 2))

    def logits_from_features(self, pooled, tokens=None):
        return pooled @ self.weight

    def trainable_parameters(self):
        return [self.weight]


def test_fit_steps_once_per_batch_and_records_every_epoch() -> None:
    from visprompt.engine.loop import fit
    from visprompt.methods.base import MethodBase

    class CE(MethodBase):
        def forward(self, batch):
            return {"loss": torch.nn.functional.cross_entropy(self.logits(batch), batch["labels"])}

    data, precision = _feature_data()
    method = CE(_Probe())
    opt = build_optimizer(method.trainable_parameters(), lr=0.5)
    sched = build_scheduler(opt, epochs=3, warmup_epochs=0)
    seen, steps = [], []
    opt.register_step_post_hook(lambda *_: steps.append(len(seen)))  # the epoch index of every optimizer step
    records = fit(method, data, opt, sched, epochs=3, batch_size=4, precision=precision, seed=0,
                  on_epoch_end=lambda e, r: seen.append(e), show_progress=False)  # fmt: skip
    assert seen == [1, 2, 3] and [r["epoch"] for r in records] == [1, 2, 3]
    assert steps == [0, 0, 1, 1, 2, 2]  # 8 samples in batches of 4: two optimizer steps in each epoch
    assert records[-1]["loss"] < records[0]["loss"]
    assert int(opt.state_dict()["state"][0]["momentum_buffer"].abs().sum() > 0)


def test_fit_takes_no_step_on_a_loss_without_a_graph() -> None:
    """A split loss weighing only an empty subset (CE on clean rows, none clean) is a constant 0 with no graph:
    the loop logs it and skips the optimizer step instead of failing in backward (gpu.py's own step did fail)."""
    from visprompt.engine.loop import fit
    from visprompt.methods.base import MethodBase
    from visprompt.methods.objective import SplitLoss

    class CleanOnly(MethodBase):
        def forward(self, batch):
            none_clean = torch.zeros_like(batch["labels"], dtype=torch.bool)
            loss, _ = SplitLoss(clean="ce", noisy="none", alpha=1.0)(self.logits(batch), batch["labels"], none_clean)
            return {"loss": loss}

    data, precision = _feature_data()
    probe = _Probe()
    opt = build_optimizer(probe.trainable_parameters(), lr=0.5)
    records = fit(CleanOnly(probe), data, opt, build_scheduler(opt, epochs=1), epochs=1, batch_size=4,
                  precision=precision, seed=0, show_progress=False)  # fmt: skip
    assert records[0]["loss"] == 0.0 and not opt.state_dict()["state"]  # no step taken
    assert bool((probe.weight == 0).all())


def test_a_diverging_loss_stops_training_with_a_one_line_error() -> None:
    from visprompt.engine.loop import DivergenceError, fit
    from visprompt.errors import VispromptError
    from visprompt.methods.base import MethodBase

    class Broken(MethodBase):
        def forward(self, batch):
            return {"loss": self.logits(batch).sum() * float("nan")}

    data, precision = _feature_data()
    method = Broken(_Probe())
    opt = build_optimizer(method.trainable_parameters(), lr=0.1)
    with pytest.raises(DivergenceError, match="epoch 1: the loss is nan") as info:
        fit(method, data, opt, build_scheduler(opt, epochs=1), epochs=1, batch_size=4, precision=precision, seed=0,
            show_progress=False)  # fmt: skip
    assert isinstance(info.value, VispromptError)
