"""The persistent frozen-feature store: keys, atomic concurrent writes, the CLI, and bit-identical engine runs."""

from __future__ import annotations

import copy
import logging
import multiprocessing as mp
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from test_engine_runs import config, world  # noqa: F401 (the tiny dataset and CLIP fixture)
from visprompt.cli import main
from visprompt.data.records import Sample
from visprompt.engine import train_run
from visprompt.engine.build import image_transform
from visprompt.engine.store import FeatureStore, StoredFeatures
from visprompt.models.tiny import tiny_clip


def _samples(root: Path, n: int = 3) -> list[Sample]:
    out = []
    for i in range(n):
        path = root / f"{i}.bin"
        path.write_bytes(bytes([i]) * 10)
        out.append(Sample(i, str(path), 0, 0, "a"))
    return out


def test_the_key_follows_weights_transform_settings_and_files(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path / "store")
    clip = tiny_clip("vit", seed=0)
    samples = _samples(tmp_path)
    tf = image_transform(clip)
    settings = {"batch_size": 8, "device": torch.device("cpu"), "precision": "fp32"}
    key = store.key(clip, samples, tf, **settings)
    assert key == store.key(clip, list(samples), image_transform(clip), **settings)  # deterministic
    assert key != store.key(tiny_clip("vit", seed=1), samples, tf, **settings)  # other weights
    assert key != store.key(clip, samples, image_transform(clip, train=True), **settings)  # other transform
    assert key != store.key(clip, samples, tf, **{**settings, "batch_size": 4})
    assert key != store.key(clip, samples[::-1], tf, **settings)  # order
    with torch.no_grad():
        next(clip.model.visual.parameters()).add_(1.0)  # weights edited in place
    assert key != store.key(clip, samples, tf, **settings)
    os.utime(samples[0].path, ns=(1, 1))  # the file changed (mtime)
    assert store.key(clip, samples, tf, **settings) != store.key(clip, samples[1:], tf, **settings)
    assert store.key(clip, samples, lambda x: x, **settings) is None  # no stable description: never stored


def test_the_key_follows_the_settings_that_hold_no_tensor(tmp_path: Path) -> None:
    # a config JSON's pooling or activation changes the features and no weight: both once read the same entry
    store = FeatureStore(tmp_path / "store")
    clip, samples = tiny_clip("vit", seed=0), _samples(tmp_path)
    settings = {"batch_size": 8, "device": torch.device("cpu"), "precision": "fp32"}
    key = store.key(clip, samples, image_transform(clip), **settings)
    pooled, activation = copy.copy(clip), copy.copy(clip)
    pooled.model_cfg = {**(clip.model_cfg or {}), "vision_cfg": {"pool_type": "avg"}}
    activation.quick_gelu = not clip.quick_gelu
    for other in (pooled, activation):
        assert store.key(other, samples, image_transform(other), **settings) != key


def _writer(root: str, seed: int) -> None:
    torch.manual_seed(0)  # every worker computes the same features, as sweep workers do
    feats = StoredFeatures(torch.randn(64, 32), torch.randn(64, 50, 32), torch.float32)
    FeatureStore(root).save("ab" * 32, feats)


def test_concurrent_writers_leave_one_whole_entry(tmp_path: Path) -> None:
    root = tmp_path / "store"
    ctx = mp.get_context("fork")  # processes, as Ray workers are (fork: no re-import of torch)
    procs = [ctx.Process(target=_writer, args=(str(root), s)) for s in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    store = FeatureStore(root)
    assert store.info()["entries"] == 1
    assert not list(root.rglob("*.tmp"))
    torch.manual_seed(0)
    pooled, tokens = torch.randn(64, 32), torch.randn(64, 50, 32)
    got = store.load("ab" * 32, need_tokens=True)
    assert torch.equal(got.pooled, pooled) and torch.equal(got.tokens, tokens)


def test_a_damaged_entry_is_a_miss(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = FeatureStore(tmp_path)
    path = store.save("cd" * 32, StoredFeatures(torch.ones(4, 3), None, torch.bfloat16))
    got = store.load("cd" * 32, need_tokens=False)
    assert got.dtype == torch.bfloat16 and got.tokens is None
    assert store.load("cd" * 32, need_tokens=True) is None  # no tokens stored
    path.write_bytes(path.read_bytes()[:20])
    with caplog.at_level(logging.WARNING):
        assert store.load("cd" * 32, need_tokens=False) is None
    assert "unreadable" in caplog.text


def test_cache_info_and_clear(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    store = FeatureStore(tmp_path / "runs" / ".features")
    for key in ("ab" * 32, "cd" * 32):
        store.save(key, StoredFeatures(torch.zeros(10, 8), None, torch.float32))
    assert main(["cache", "info", "--out", str(tmp_path / "runs")]) == 0
    assert "2 entries" in capsys.readouterr().out
    assert main(["cache", "clear", "--store", str(store.root)]) == 0
    assert "removed 2 entries" in capsys.readouterr().out
    assert store.info()["entries"] == 0
    (tmp_path / "file").write_text("x")
    assert main(["cache", "info", "--store", str(tmp_path / "file")]) == 2


def _params(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "checkpoint.safetensors"))


@pytest.mark.parametrize(
    ("method", "noise"), [("visprompt", "sym"), pytest.param("coop", "instance", marks=pytest.mark.slow)]
)
def test_runs_are_bit_identical_with_and_without_the_store(
    world,  # noqa: F811
    tmp_path: Path,
    method: str,
    noise: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Off, on and empty (fills it), on and full (reads it): the same split, parameters and test logits."""
    results = {}
    with caplog.at_level(logging.INFO, logger="visprompt.engine.store"):
        for name, store in (("off", "null"), ("fill", "auto"), ("hit", "auto")):  # run names: store-*
            caplog.clear()
            cfg = config(world, method, tmp_path, f"run.name=store-{name}", f"run.feature_store={store}",
                         f"noise.type={noise}", "optim.epochs=1")  # fmt: skip
            result = train_run(cfg, show_progress=False)
            results[name] = (result, caplog.text)
    store = FeatureStore(tmp_path / ".features")
    assert store.info()["entries"] >= 2  # the training set and the test split
    assert "wrote" in results["fill"][1] and "features from" not in results["fill"][1]
    assert "features from" in results["hit"][1] and "wrote" not in results["hit"][1]
    assert "feature store" not in results["off"][1]
    ref = results["off"][0]
    for name in ("fill", "hit"):
        other = results[name][0]
        assert (other.run_dir / "split.json").read_text() == (ref.run_dir / "split.json").read_text()
        a, b = _params(ref.run_dir), _params(other.run_dir)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        for field in ("top1", "macro_f1", "per_class_accuracy"):
            assert other.metrics[field] == ref.metrics[field]
        assert other.metrics["last_epoch"]["loss"] == ref.metrics["last_epoch"]["loss"]


def test_batches_pass_through_and_a_failed_write_only_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    parts = [(torch.randn(2, 3), torch.randn(2, 4, 3)) for _ in range(2)]
    blocked = tmp_path / "a-file"
    blocked.write_text("x")
    with caplog.at_level(logging.WARNING):
        out = list(FeatureStore(blocked).batches("ef" * 32, lambda: iter(parts), batch_size=2,
                                                 device=torch.device("cpu"), keep_tokens=True))  # fmt: skip
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(out, parts, strict=True))
    assert "could not write" in caplog.text
    store = FeatureStore(tmp_path / "ok")
    first = list(store.batches("ef" * 32, lambda: iter(parts), batch_size=2, device=torch.device("cpu"),
                               keep_tokens=True))  # fmt: skip
    again = list(store.batches("ef" * 32, lambda: iter(()), batch_size=2, device=torch.device("cpu"),
                               keep_tokens=True))  # fmt: skip
    assert len(again) == 2 and all(torch.equal(a[1], b[1]) for a, b in zip(again, first, strict=True))


def test_cache_prune_removes_the_least_recently_used_entries(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    store = FeatureStore(tmp_path / ".features")
    keys = ["aa" * 32, "bb" * 32, "cc" * 32]
    for i, key in enumerate(keys):  # saved oldest first, 10 s apart
        path = store.save(key, StoredFeatures(torch.zeros(100, 8), None, torch.float32))
        os.utime(path, ns=(1_000_000_000_000 + i * 10**10,) * 2)
    size = store.path(keys[0]).stat().st_size
    assert store.load(keys[0], need_tokens=False) is not None  # a hit: the oldest entry is now the newest
    assert main(["cache", "prune", "--max-size", str(2 * size), "--store", str(store.root)]) == 0
    assert "removed 1 entries" in capsys.readouterr().out
    assert [p.stem for p in store.entries()] == [keys[0], keys[2]]  # bb: the least recently used
    assert store.prune(0) == (2, 2 * size) and store.info()["entries"] == 0
    assert main(["cache", "prune", "--max-size", "lots", "--store", str(store.root)]) == 2
    assert "--max-size: expected a size such as 500M" in capsys.readouterr().err


def test_parse_size() -> None:
    from visprompt.commands.cache import parse_size

    assert parse_size("2G") == 2 * 1024**3 and parse_size("500MiB") == 500 * 1024**2
    assert parse_size("1.5 GB") == int(1.5 * 1024**3) and parse_size("4096") == 4096


# -- eval and predict read the store (engine/inference.py) ---------------------------------------------------


@pytest.fixture
def encoder_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the frozen image tower's batches (every FrozenCLIP, from now until the test ends)."""
    from visprompt.models.frozen_clip import FrozenCLIP

    calls: list[int] = []
    original = FrozenCLIP.encode_image

    def counted(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(int(images.shape[0]))
        return original(self, images)

    monkeypatch.setattr(FrozenCLIP, "encode_image", counted)
    return calls


def test_eval_reads_the_test_features_training_wrote_and_fills_an_empty_store(
    world,  # noqa: F811
    tmp_path: Path,
    encoder_calls: list[int],
) -> None:
    """The logits are bit-identical off, from the training's entry, cold (filling) and warm; warm encodes nothing."""
    from visprompt.engine import load_run
    from visprompt.engine.metrics import classification_metrics

    cfg = config(world, "visprompt", tmp_path, "optim.epochs=1")  # visprompt: its learner reads the visual tokens
    result = train_run(cfg, show_progress=False)
    test = None
    logits, calls = {}, {}
    for name, setting in (("off", None), ("trained", True), ("cold", str(tmp_path / "other")),
                          ("warm", str(tmp_path / "other"))):  # fmt: skip
        loaded = load_run(result.run_dir, device="cpu", feature_store=setting)
        test = loaded.splits.test
        encoder_calls.clear()
        logits[name] = loaded.logits(test)
        calls[name] = sum(encoder_calls)
    assert calls["off"] == calls["cold"] == len(test) > 0
    assert calls["trained"] == calls["warm"] == 0  # both read an entry: the training's, the cold pass's
    for name in ("trained", "cold", "warm"):
        assert torch.equal(logits[name], logits["off"]), name
    labels = torch.tensor([s.label for s in test])
    scores = classification_metrics(logits["trained"].argmax(-1), labels, loaded.splits.classnames)
    for field in ("top1", "macro_f1", "per_class_accuracy"):
        assert scores[field] == result.metrics[field]  # eval reproduces the run's own numbers exactly
    assert FeatureStore(tmp_path / "other").info()["entries"] == 1


def test_eval_and_predict_cli_hit_the_store_and_print_the_same(
    world,  # noqa: F811
    tmp_path: Path,
    encoder_calls: list[int],
    capsys: pytest.CaptureFixture,
) -> None:
    cfg = config(world, "coop", tmp_path, "optim.epochs=1", "run.feature_store=null")  # training stores nothing
    run_dir = str(train_run(cfg, show_progress=False).run_dir)
    images = sorted(str(p) for p in (world["data"] / "test").rglob("*.png"))[:5]
    outputs, calls = {}, {}
    for command in (["eval", run_dir, "--json"], ["predict", run_dir, *images, "--json"]):
        for name, flag in (("off", ["--feature-store", "none"]), ("cold", ["--feature-store", "auto"]),
                           ("warm", ["--feature-store", "auto"]), ("saved", [])):  # fmt: skip
            capsys.readouterr()
            encoder_calls.clear()
            assert main([*command, "--device", "cpu", *flag]) == 0
            outputs[command[0], name] = capsys.readouterr().out
            calls[command[0], name] = sum(encoder_calls)
        assert calls[command[0], "cold"] == calls[command[0], "off"] > 0
        assert calls[command[0], "warm"] == 0  # read back
        assert calls[command[0], "saved"] == calls[command[0], "off"]  # the run's own setting: null
        assert outputs[command[0], "off"] == outputs[command[0], "cold"] == outputs[command[0], "warm"]
    assert FeatureStore(tmp_path / ".features").info()["entries"] == 2  # the test split, the five images


def test_the_store_of_a_moved_run_is_beside_it_now(world, tmp_path: Path) -> None:  # noqa: F811
    from visprompt.engine.inference import run_feature_store
    from visprompt.engine.rundir import RunDir

    cfg = config(world, "coop", tmp_path / "then", "run.name=group/run-1", "run.feature_store=auto")
    rd = RunDir(tmp_path / "now" / "group" / "run-1")  # moved: config.yaml still says out_dir=then
    assert run_feature_store(rd, cfg).root == tmp_path / "now" / ".features"
    assert run_feature_store(rd, cfg, str(tmp_path / "s")).root == tmp_path / "s"
    assert run_feature_store(rd, cfg, None) is None and run_feature_store(rd, cfg, False) is None
    off = config(world, "coop", tmp_path / "then", "run.name=r", "run.feature_store=null")
    assert run_feature_store(RunDir(tmp_path / "r"), off) is None
    assert run_feature_store(RunDir(tmp_path / "r"), off, "auto").root == tmp_path / ".features"


def test_the_key_follows_the_cpu_thread_count(tmp_path: Path) -> None:
    """On CPU the tower's last bits depend on the thread count (RN50's convolutions): it is part of the key."""
    store = FeatureStore(tmp_path)
    clip = tiny_clip("vit", seed=0)
    settings = {"batch_size": 8, "device": torch.device("cpu"), "precision": "fp32"}
    samples, tf = _samples(tmp_path), image_transform(clip)
    before = torch.get_num_threads()
    try:
        keys = []
        for threads in (1, 1, 2):
            torch.set_num_threads(threads)
            keys.append(store.key(clip, samples, tf, **settings))
    finally:
        torch.set_num_threads(before)
    assert keys[0] == keys[1] != keys[2]


def test_train_and_config_take_feature_store_as_a_flag(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    for value, shown in (("none", "feature_store: null"), (str(tmp_path), f"feature_store: {tmp_path}")):
        assert main(["config", "show", "--method", "coop", "--feature-store", value]) == 0
        assert shown in capsys.readouterr().out
