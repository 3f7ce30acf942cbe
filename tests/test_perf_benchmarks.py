"""The performance benchmarks: the naive 77-token reference they time agrees with the library, and gpu.py runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import gpu  # noqa: E402
import train_step  # noqa: E402

from visprompt.models import CoOpPromptLearner, PromptClassifier, VisPromptLearner  # noqa: E402

NAMES = ["apple", "aquarium_fish", "lawn_mower", "sweet_pepper", "cat"]


@pytest.fixture(scope="module")
def clip():
    return gpu.build_clip("ViT-B-16", torch.device("cpu"), smoke=True)


def _batch(clip, n: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    pooled, tokens = clip.encode_image(torch.randn(n, 3, 32, 32, generator=g))
    return {
        "pooled": pooled,
        "tokens": tokens,
        "labels": torch.tensor([0, 3, 4][:n]),
        "clean": torch.tensor([True, False, True][:n]),
    }


@pytest.mark.parametrize("kind", ["visprompt", "coop"])
def test_naive_reference_matches_library_step(clip, kind: str) -> None:
    """Same weights, same dropout masks: the 77-token forward gives the library's logits and gradients."""
    torch.manual_seed(0)
    learner = VisPromptLearner(clip, NAMES, n_ctx=4) if kind == "visprompt" else CoOpPromptLearner(clip, NAMES, n_ctx=4)
    learner.train()
    params = [p for p in learner.parameters() if p.requires_grad]
    batch, loss = _batch(clip), train_step.VISPROMPT_LOSS
    fast = train_step.logits_and_grads(PromptClassifier(clip, learner).logits_from_features, params, loss, batch, 1)
    naive = train_step.logits_and_grads(train_step.NaivePrompts(clip, learner, NAMES), params, loss, batch, 1)
    diffs = train_step.parity(fast, naive, float(clip.logit_scale.exp()))
    assert diffs["max|dlogit|"] < 1e-4 and diffs["grad rel"] < 1e-4
    assert fast[0].shape == (3, len(NAMES))
    assert float(fast[0].std()) > 0  # not a degenerate (constant) comparison


def test_naive_reference_detects_a_changed_prompt(clip) -> None:
    """The parity check can fail: a naive model built for other class names gives other logits."""
    torch.manual_seed(0)
    learner = CoOpPromptLearner(clip, NAMES, n_ctx=4)
    params = [p for p in learner.parameters() if p.requires_grad]
    batch, loss = _batch(clip), train_step.COOP_LOSS
    fast = train_step.logits_and_grads(PromptClassifier(clip, learner).logits_from_features, params, loss, batch, 1)
    other = train_step.NaivePrompts(clip, learner, [*NAMES[:-1], "dog"])
    diffs = train_step.parity(fast, train_step.logits_and_grads(other, params, loss, batch, 1), 1.0)
    assert diffs["max|dlogit|"] > 1e-3


def test_token_positions_count_the_prefix_once_per_image(clip) -> None:
    learner = VisPromptLearner(clip, NAMES, n_ctx=4)
    k, idx = learner.prefix_len, learner.pool_index
    bodies = int((idx + 1 - k).sum())  # each class's own name, full stop and EOT (grouped by length, no padding)
    assert bodies < 5 * (int(idx.max()) + 1 - k)  # the names differ in length: padding would cost more
    assert train_step.token_positions("visprompt", learner, 8, 5, clip) == 8 * (k + bodies)
    assert train_step.token_positions("coop", learner, 8, 5, clip) == k + bodies
    assert train_step.token_positions("naive", learner, 8, 5, clip) == 8 * 5 * 77


def test_clip_like_probs_are_probabilities_with_noisy_labels() -> None:
    probs, labels = train_step.clip_like_probs(200, 10, seed=0, noise=0.5)
    assert torch.allclose(probs.sum(1), torch.ones(200), atol=1e-5)
    true = torch.arange(10).repeat(20)
    assert 0.3 < float((labels != true).float().mean()) < 0.6  # about half flipped (some flips land on the truth)


@pytest.mark.parametrize("global_seed", [0, 5])
def test_gpu_script_step_batches_do_not_depend_on_the_global_generator(clip, global_seed: int) -> None:
    """gpu.py once drew labels and the clean mask from torch's global generator, whose state differs between
    processes: global seed 5 drew no clean row at B = 2, CoOp's loss (CE on clean rows only) had no graph and its
    step raised in some runs only. Now both come from a fixed seed, and CoOp's batch is all clean (its preset)."""
    pooled, tokens = clip.encode_image(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    torch.manual_seed(global_seed)
    split, coop_batch = gpu.step_batch(pooled, tokens, 5), gpu.step_batch(pooled, tokens, 5, split=False)
    assert split["clean"].tolist() == [True, False] and coop_batch["clean"].all()
    assert torch.equal(split["labels"], coop_batch["labels"])
    torch.manual_seed(0)
    learner = CoOpPromptLearner(clip, NAMES, n_ctx=4)
    before = learner.context.ctx.detach().clone()
    precision = gpu.resolve_precision("bf16", torch.device("cpu"))
    torch.manual_seed(global_seed)
    step = gpu.step_fn(
        PromptClassifier(clip, learner).logits_from_features, train_step.COOP_LOSS, [learner.context.ctx],
        precision, coop_batch,
    )  # fmt: skip
    step()
    assert not torch.equal(learner.context.ctx.detach(), before)  # the step trained the context


@pytest.mark.slow
def test_gpu_script_smoke_on_cpu(tmp_path: Path) -> None:
    """``gpu.py --smoke`` runs every measurement on tiny models and writes its JSON and markdown."""
    gpu.main(["--smoke", "--device", "cpu", "--archs", "ViT-B-16", "--precisions", "fp32", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "gpu_bench.json").read_text())
    whats = {r["what"] for r in result["rows"]}
    assert {"encode", "naive", "visprompt", "coop", "visprompt+enc", "eval visprompt", "OT mini-batch"} <= whats
    errors = [r for r in result["rows"] if str(r.get("note", "")).startswith("error")]
    assert not errors, errors
    vis = next(r for r in result["rows"] if r["what"] == "visprompt")
    assert vis["ms"] > 0 and vis["max|dlogit|"] < 1e-4 and "naive/x" in vis
    assert "| visprompt" in (tmp_path / "gpu_bench.md").read_text()


@pytest.mark.slow  # the profiler's memory pass: ~15 s here
def test_floor_benchmark_runs_the_distinct_positions_with_equal_logits() -> None:
    import text_path

    from visprompt.models.tiny import tiny_clip

    clip = tiny_clip("vit", seed=0)
    padded, floor = text_path.floor_rows(clip, n_cls=12, batch=2, repeats=1, n_tokens=4)
    assert floor["positions"] == floor["distinct"] < padded["positions"]
    assert floor["x distinct"] == 1.0 and padded["x distinct"] > 1.0
    assert floor["max|dlogit|"] < 1e-5 and floor["grad rel"] < 1e-4


@pytest.mark.slow
def test_many_classes_benchmark_chunks_agree() -> None:
    import many_classes

    from visprompt.models.tiny import tiny_clip

    rows = many_classes.bench(tiny_clip("vit", seed=0), 12, 2, [None, 5], repeats=1, target_b=16)
    assert [r["class_chunk"] for r in rows] == ["all", 5]
    assert rows[1]["max|dlogit|"] < 1e-5 and rows[1]["grad rel"] < 1e-4
    assert rows[0]["GB at B=16 (extrap.)"] == pytest.approx(rows[0]["peak MB"] * 8 / 1024)


def test_sweep_projection_counts_the_paper_grid() -> None:
    import sweep

    rows, summary = sweep.projection(BENCHMARKS.parent / "configs" / "sweeps" / "paper-rn50.yaml", ms_per_image=100.0)
    total = rows[-1]
    assert total["dataset"] == "all" and total["runs"] == summary["runs"] == 1095
    dtd = next(r for r in rows if r["dataset"] == "dtd")
    assert dtd["test"] == 1692 and dtd["train (16 shots)"] == 16 * 47
    assert dtd["un-aug. images, store"] == 1692 + 3 * 16 * 47  # the test split once, each seed's train set once
    assert total["un-aug. images, no store"] > 50 * total["un-aug. images, store"]
    assert summary["no store h"] > summary["store h"]


@pytest.mark.slow
def test_grid_speed_parts_times_both_paths(capsys: pytest.CaptureFixture) -> None:
    """``grid_speed.py --parts``: the OT split and text encoder rows against the reference copies (~1 min)."""
    import grid_speed

    grid_speed.parts(4)
    out = capsys.readouterr().out
    assert out.count("| OT split") == 4 and out.count("| text encoder") == 3


def test_grid_speed_refuses_a_tree_without_visprompt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import grid_speed

    monkeypatch.setattr(sys, "argv", ["grid_speed.py", "--reference-src", str(tmp_path), "--data", str(tmp_path)])
    with pytest.raises(SystemExit) as exc:
        grid_speed.main()
    assert exc.value.code == 2  # argparse's error: --reference-src names no source tree


@pytest.mark.slow  # a testbed build, one training epoch, three evaluations: ~10 s here
def test_eval_store_benchmark_reads_the_warm_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import eval_store

    argv = ["eval_store.py", "--data", str(tmp_path / "DATA"), "--methods", "coop", "--epochs", "1", "--repeats", "1",
            "--work", str(tmp_path / "work")]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    before = torch.get_num_threads()
    try:
        assert eval_store.main() == 0
    finally:
        torch.set_num_threads(before)
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines() if "testbed-backgrounds coop" in line]
    by_variant = {r[3].strip(): r for r in rows}
    assert by_variant.keys() == {"no store", "cold", "warm"}
    assert int(by_variant["warm"][4]) == 0 and int(by_variant["cold"][4]) == int(by_variant["no store"][4]) > 0
    assert by_variant["cold"][-2].strip() == by_variant["warm"][-2].strip() == "yes"
