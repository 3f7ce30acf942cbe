"""Run directories under hostile conditions: changed settings, a second writer, escaping names, corrupt files,
a full disk, unfinished runs given to eval/predict, bad images found before training (docs/reliability.md)."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from visprompt.cli import main
from visprompt.config import load_config
from visprompt.engine import train_run
from visprompt.engine.rundir import RunDir, RunFileError
from visprompt.errors import ConfigError, DataError
from visprompt.runlock import FolderLockedError, folder_lock, is_locked
from worlds import make_folder_dataset, tiny_world


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    return tiny_world(tmp_path_factory.mktemp("hardening"), train=5, test=2, size=12)


def config(world: dict[str, Path], out: Path, *overrides: str, data: Path | None = None):
    base = [
        "data.dataset=folder", f"data.path={data or world['data']}", "data.shots=2", "data.augment=false",
        f"backbone.arch={world['arch']}", "backbone.weights=null", "noise.type=sym", "noise.rate=0.25",
        "optim.epochs=2", "optim.batch_size=4", "optim.eval_batch_size=8", "prompt.n_ctx=2",
        "run.device=cpu", f"run.out_dir={out}", "run.name=run",
    ]  # fmt: skip
    return load_config(overrides=[*base, *overrides], method="coop")


class Crash(RuntimeError):
    pass


def crash_after(n: int):
    def hook(epoch: int, record: dict) -> None:
        if epoch == n:
            raise Crash(f"after epoch {epoch}")

    return hook


@pytest.fixture(scope="module")
def finished(world, tmp_path_factory) -> Path:
    """One finished 2-epoch run (shared, read-only for the tests that use it)."""
    out = tmp_path_factory.mktemp("finished")
    result = train_run(config(world, out), show_progress=False)
    assert result.status == "done"
    return result.run_dir


@pytest.fixture(scope="module")
def interrupted(world, tmp_path_factory) -> Path:
    """A run killed after epoch 1 of 2 (copy it before changing it)."""
    out = tmp_path_factory.mktemp("interrupted")
    with pytest.raises(Crash):
        train_run(config(world, out), on_epoch_end=crash_after(1), show_progress=False)
    return out / "run"


def copy_run(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file() and f.name != ".lock":
            (dst / f.name).write_bytes(f.read_bytes())
    return dst


# ------------------------------------------------------------------------------- the done-check, --restart
def test_a_finished_run_with_other_settings_is_refused_not_reused(world, finished, tmp_path) -> None:
    run = copy_run(finished, tmp_path / "run")
    before = (run / "metrics.json").read_bytes()
    for change in ("optim.epochs=3", "optim.lr=0.01", f"data.path={world['base']}"):
        with pytest.raises(ConfigError, match=r"holds a finished run made with other settings \(.*; add --restart"):
            train_run(config(world, tmp_path, change), show_progress=False)
    # where it runs may differ: skipped, same metrics
    again = train_run(config(world, tmp_path, "run.threads=1", "data.num_workers=0"), show_progress=False)
    assert again.skipped and (run / "metrics.json").read_bytes() == before
    # the CLI says the same in one line, exit 2
    rc = main(["train", "--config", str(run / "config.yaml"), "--epochs", "3", "--out", str(tmp_path)])
    assert rc == 2 and (run / "metrics.json").read_bytes() == before


def test_a_finished_run_is_not_reused_after_its_data_changed(world, tmp_path) -> None:
    # relabelling or adding images keeps every setting: the run was skipped and its old metrics came back under the
    # data's name (a sweep skipped it too, and `audit --dataset` audited the old labels)
    data = make_folder_dataset(tmp_path / "data", train=4, test=2, size=12)
    cfg = config(world, tmp_path / "runs", data=data)
    first = train_run(cfg, show_progress=False)
    assert train_run(cfg, show_progress=False).skipped  # unchanged: skipped
    os.utime(next((data / "test" / "red").iterdir()), ns=(1, 1))  # a file's time alone is no change
    assert train_run(cfg, show_progress=False).skipped
    (data / "test" / "red" / "0.png").rename(data / "test" / "blue" / "9.png")  # relabelled
    metrics = (first.run_dir / "metrics.json").read_bytes()
    with pytest.raises(ConfigError, match=r"holds a finished run whose inputs differ: the images or labels of "
                       r"data.dataset folder \(data.path .*data\) changed since; add --restart") as info:  # fmt: skip
        train_run(cfg, show_progress=False)
    assert "\n" not in str(info.value) and (first.run_dir / "metrics.json").read_bytes() == metrics
    for folder in ("audit", "audit-cache"):  # an audit of the replaced run, and its cached features, go with it
        (first.run_dir / folder).mkdir()
        (first.run_dir / folder / "kept.txt").write_text("old")
    again = train_run(cfg, restart=True, show_progress=False)
    assert not again.skipped
    assert not (first.run_dir / "audit").exists() and not (first.run_dir / "audit-cache").exists()
    assert train_run(cfg, show_progress=False).skipped
    data.rename(tmp_path / "elsewhere")  # not mounted here: nothing to compare with, the finished run is kept
    assert train_run(cfg, show_progress=False).skipped


def test_a_run_does_not_resume_or_skip_after_its_weights_changed(world, tmp_path) -> None:
    from visprompt.models.backbone import load_backbone, save_backbone

    weights = tmp_path / "tiny.safetensors"
    save_backbone(load_backbone(str(world["arch"]), None, seed=1), weights)
    cfg = config(world, tmp_path / "runs", f"backbone.weights={weights}")
    with pytest.raises(Crash):
        train_run(cfg, on_epoch_end=crash_after(1), show_progress=False)
    save_backbone(load_backbone(str(world["arch"]), None, seed=2), weights)  # replaced at the same path
    with pytest.raises(ConfigError, match=r"holds an unfinished run whose inputs differ: the backbone .* changed"):
        train_run(cfg, show_progress=False)
    save_backbone(load_backbone(str(world["arch"]), None, seed=1), weights)  # the same weights, written again
    result = train_run(cfg, show_progress=False)
    assert result.resumed_from == 1 and train_run(cfg, show_progress=False).skipped
    save_backbone(load_backbone(str(world["arch"]), None, seed=2), weights)
    with pytest.raises(ConfigError, match=r"holds a finished run whose inputs differ: the backbone \(.*tiny"):
        train_run(cfg, show_progress=False)


def test_noise_from_the_clip_is_not_read_from_the_cache_of_other_weights_at_the_same_path(world, tmp_path) -> None:
    import json

    from visprompt.models.backbone import load_backbone, save_backbone

    weights = tmp_path / "tiny.safetensors"
    labels = {}
    for seed, name in ((1, "a"), (7, "b"), (1, "c")):
        save_backbone(load_backbone(str(world["arch"]), None, seed=seed), weights)
        cfg = config(world, tmp_path / "runs", f"backbone.weights={weights}", "noise.type=instance", "noise.rate=0.5",
                     "data.shots=5", "optim.epochs=1", f"run.name={name}")  # fmt: skip
        split = json.loads((train_run(cfg, show_progress=False).run_dir / "split.json").read_text())
        labels[name] = split["train"]["label"]
    assert labels["a"] == labels["c"] and labels["a"] != labels["b"]  # b's noise was made by b's weights


def test_a_sweep_refuses_finished_runs_whose_data_changed(world, tmp_path) -> None:
    from visprompt.sweep import SweepRun, refuse_stale

    data = make_folder_dataset(tmp_path / "data", train=4, test=2, size=12)
    cfg = config(world, tmp_path / "runs", data=data)
    train_run(cfg, show_progress=False)
    runs = [SweepRun("run", {}, cfg)]
    refuse_stale(runs, "sweep x", "remedy")  # unchanged
    (data / "train" / "red" / "0.png").unlink()
    with pytest.raises(ConfigError, match=r"^sweep x: 1 finished runs .* e.g. run: the images or labels of .*; remedy"):
        refuse_stale(runs, "sweep x", "remedy")


@pytest.mark.slow
def test_restart_replaces_a_run_with_other_settings(world, finished, tmp_path) -> None:
    copy_run(finished, tmp_path / "run")
    result = train_run(config(world, tmp_path, "optim.epochs=1"), restart=True, show_progress=False)
    assert result.status == "done" and not result.skipped and result.metrics["epochs"] == 1
    assert load_config([result.run_dir / "config.yaml"]).optim.epochs == 1


def test_a_name_that_leaves_out_dir_is_refused(world, tmp_path) -> None:
    for name in ("../../x", "/tmp/abs", "a/../../b", "."):
        with pytest.raises(ConfigError, match="relative path inside --out"):
            train_run(config(world, tmp_path / "out", f"run.name={name}"), show_progress=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------ locking
def test_a_second_writer_gets_a_one_line_error(world, tmp_path, capsys) -> None:
    with folder_lock(tmp_path / "run"):
        assert is_locked(tmp_path / "run")
        with pytest.raises(FolderLockedError, match=f"run directory {tmp_path / 'run'} is in use .*pid {os.getpid()}"):
            train_run(config(world, tmp_path), show_progress=False)
    assert not is_locked(tmp_path / "run")
    assert not (tmp_path / "run" / "log.jsonl").exists()


def test_a_killed_writer_releases_its_lock(tmp_path) -> None:
    code = (
        "import sys, time; from visprompt.runlock import folder_lock\n"
        f"with folder_lock({str(tmp_path / 'run')!r}):\n    print('locked', flush=True); time.sleep(60)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "locked"
        assert is_locked(tmp_path / "run")
        with pytest.raises(FolderLockedError, match=f"pid {proc.pid}"), folder_lock(tmp_path / "run"):
            pass
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not is_locked(tmp_path / "run")
    with folder_lock(tmp_path / "run"):  # taken at once after kill -9
        pass


# ----------------------------------------------------------------------------------- corrupt run files
@pytest.mark.parametrize(
    ("name", "damage", "message"),
    [
        ("checkpoint.safetensors", lambda b: b[: len(b) // 2], "cannot read the checkpoint"),
        ("checkpoint.safetensors", lambda b: os.urandom(len(b)), "cannot read the checkpoint"),
        ("state.pt", lambda b: b[: len(b) // 3], "cannot read the resume state"),
        ("state.pt", lambda b: os.urandom(200), "cannot read the resume state"),
        ("config.yaml", lambda b: b"\xff\xfe" + b, "not UTF-8"),
        ("config.yaml", lambda b: b"optim: [", "invalid YAML"),
        ("split.json", lambda b: b[:10], "split record"),
    ],
)
def test_a_corrupt_run_file_is_a_one_line_error_on_resume(world, interrupted, tmp_path, name, damage, message) -> None:
    run = copy_run(interrupted, tmp_path / "run")
    (run / name).write_bytes(damage((run / name).read_bytes()))
    with pytest.raises((RunFileError, DataError, ConfigError), match=message) as err:
        train_run(config(world, tmp_path), show_progress=False)
    assert "\n" not in str(err.value) and "weights_only" not in str(err.value)
    if name in ("checkpoint.safetensors", "state.pt", "config.yaml"):
        assert "--restart" in str(err.value)


def test_eval_and_predict_on_corrupt_or_unfinished_runs(world, finished, interrupted, tmp_path, capsys) -> None:
    image = world["data"] / "test" / "red" / "0.png"
    # unfinished: refused, then allowed with --partial (and a warning)
    assert main(["eval", str(interrupted), "--device", "cpu"]) == 2
    assert "the run failed" in capsys.readouterr().err
    assert main(["predict", str(interrupted), str(image), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "its checkpoint holds epoch 1 of 2" in err and "--partial" in err
    assert main(["eval", str(interrupted), "--device", "cpu", "--partial", "--json"]) == 0
    # a corrupt checkpoint: one line, no traceback
    run = copy_run(finished, tmp_path / "run")
    (run / "checkpoint.safetensors").write_bytes(b"\x00" * 7)
    capsys.readouterr()
    assert main(["eval", str(run), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "checkpoint" in err
    # a directory, a FIFO, a non-image as the image to predict
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "text.png").write_text("not an image")
    for path, expected in ((tmp_path, "is a directory"), (tmp_path / "fifo", "not a regular file"),
                           (tmp_path / "text.png", "not a readable image")):  # fmt: skip
        assert main(["predict", str(finished), str(path), "--device", "cpu"]) == 2
        assert expected in capsys.readouterr().err


def test_a_torn_log_does_not_miscount_epochs(world, tmp_path) -> None:
    def tear(epoch: int, record: dict) -> None:
        if epoch == 1:  # a torn, non-UTF-8 line where epoch 1 was
            (tmp_path / "run" / "log.jsonl").write_bytes(b'{"epoch": 1, "lo\xff\n')

    result = train_run(config(world, tmp_path), on_epoch_end=tear, show_progress=False)
    assert result.metrics["epochs"] == 2 and result.metrics["log_complete"] is False


# ------------------------------------------------------------------------------------- faults and data
def test_a_full_disk_marks_the_run_failed_and_the_cli_says_so_in_one_line(world, tmp_path, monkeypatch, capsys):
    import visprompt.engine.rundir as rundir

    real = rundir.atomic_write_text

    def full(path, text):
        if Path(path).name in ("log.jsonl", "status", "error.txt") and "running" not in text:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, text)

    monkeypatch.setattr(rundir, "atomic_write_text", full)
    argv = ["train", "--config", str(tmp_path / "c.yaml"), "--no-progress"]
    from visprompt.config import to_yaml

    (tmp_path / "c.yaml").write_text(to_yaml(config(world, tmp_path)))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "No space left on device" in err and "--out" in err
    assert RunDir(tmp_path / "run").status() == "failed"


def test_a_bad_test_image_is_found_before_training(world, tmp_path) -> None:
    data = make_folder_dataset(tmp_path / "images", train=5, test=2, size=12)
    (data / "test" / "green" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    (data / "test" / "blue" / "1.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"2 of the \d+ images this run reads are unusable, e.g. .* before training"):
        train_run(config(world, tmp_path / "out", data=data), show_progress=False)
    assert not (tmp_path / "out" / "run").exists()  # nothing trained, nothing left behind


def test_an_empty_class_is_refused(world, tmp_path) -> None:
    data = make_folder_dataset(tmp_path / "images", train=5, test=2, size=12)
    (data / "train" / "violet").mkdir()
    (data / "test" / "violet").mkdir()
    Image.new("RGB", (8, 8)).save(data / "test" / "violet" / "0.png")
    with pytest.raises(DataError, match="class 'violet' has no training images"):
        train_run(config(world, tmp_path / "out", data=data), show_progress=False)
