"""A sweep on a real multi-process Ray cluster survives losing a worker node (marker ``ray_cluster``; CI runs it
in its own pytest invocation, see the Makefile).

A head (no CPUs, so every run goes to a worker node) and a worker node are started with ``ray start`` on
private ports and a private temp dir, with token authentication (``RAY_AUTH_MODE=token``, one
``RAY_AUTH_TOKEN`` for every node and the driver). The sweep runs through ``address``; once a run has
checkpointed an epoch the worker node is killed (SIGKILL to each of its processes, by pid) and a new one joins.
The runs are retried, resume from their checkpoints, and end with the metrics of an undisturbed run. Nothing
here calls ``ray stop``: what the test starts, it kills by pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from test_hardening_runs import make_images  # noqa: E402
from visprompt.config import config_dir, load_config  # noqa: E402
from visprompt.engine import train_run  # noqa: E402
from visprompt.sweep import read_status, run_sweep  # noqa: E402
from visprompt.sweep.grid import SweepRun  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.ray_cluster]
RAY = str(Path(sys.executable).with_name("ray"))


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        out.append(p)
        stack += children.get(p, [])
    return out


def _kill_tree(proc: subprocess.Popen) -> None:
    for pid in reversed(_descendants(proc.pid)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)


class Cluster:
    """A head and worker nodes started with ``ray start --block``; each node's processes killed by pid."""

    def __init__(self) -> None:
        self.temp = tempfile.mkdtemp(prefix="vpray", dir="/tmp")  # short: Ray's socket paths have a length limit
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
                    "RAY_USAGE_STATS_ENABLED": "0", "RAY_health_check_period_ms": "1000",
                    "RAY_health_check_failure_threshold": "3", "RAY_health_check_initial_delay_ms": "1000"}  # fmt: skip
        self.env.pop("RAY_ADDRESS", None)
        self.port = _free_ports(1)[0]
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: list[subprocess.Popen] = []

    def _start(self, args: list[str], log: str) -> subprocess.Popen:
        p = _free_ports(8)
        lo = 20000 + p[6] % 20000
        args += ["--block", "--disable-usage-stats", f"--node-manager-port={p[0]}", f"--object-manager-port={p[1]}",
                 f"--metrics-export-port={p[2]}", f"--dashboard-agent-listen-port={p[3]}",
                 f"--dashboard-agent-grpc-port={p[4]}", f"--runtime-env-agent-port={p[5]}",
                 f"--min-worker-port={lo}", f"--max-worker-port={lo + 60}"]  # fmt: skip
        out = open(Path(self.temp) / log, "w")  # noqa: SIM115 (kept open for the node's life)
        proc = subprocess.Popen([RAY, "start", *args], env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self.nodes.append(proc)
        return proc

    def start_head(self) -> None:
        client = _free_ports(1)[0]
        self._start(["--head", f"--port={self.port}", "--num-cpus=0", f"--temp-dir={self.temp}",
                     "--include-dashboard=false", f"--ray-client-server-port={client}"], "head.log")  # fmt: skip

    def add_worker(self, cpus: int = 2) -> subprocess.Popen:
        return self._start([f"--address={self.address}", f"--num-cpus={cpus}"], f"worker{len(self.nodes)}.log")

    def wait_for_cpus(self, cpus: int, timeout: float = 90.0) -> None:
        code = ("import ray, time, sys\nray.init(address=sys.argv[1], log_to_driver=False)\n"
                "t = time.time() + float(sys.argv[3])\n"
                "while ray.cluster_resources().get('CPU', 0) < float(sys.argv[2]) and time.time() < t:\n"
                "    time.sleep(0.5)\nprint(ray.cluster_resources().get('CPU', 0))\n")  # fmt: skip
        out = subprocess.run([sys.executable, "-c", code, self.address, str(cpus), str(timeout)], env=self.env,
                             capture_output=True, text=True, timeout=timeout + 60)  # fmt: skip
        assert out.returncode == 0 and float(out.stdout.split()[-1]) >= cpus, (out.stdout, out.stderr[-2000:],
                                                                                self.logs())  # fmt: skip

    def logs(self) -> str:
        return "\n".join(f"--- {f.name}\n{f.read_text()[-1500:]}" for f in Path(self.temp).glob("*.log"))

    def close(self) -> None:
        for proc in reversed(self.nodes):
            if proc.poll() is None or _descendants(proc.pid)[1:]:
                _kill_tree(proc)
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    c = Cluster()
    try:
        c.start_head()
        c.add_worker()
        c.wait_for_cpus(2)
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    from visprompt.models.tiny import tiny_config

    base = tmp_path_factory.mktemp("cluster")
    arch = base / "tiny-vit.json"
    arch.write_text(json.dumps(tiny_config("vit")))
    return {"data": make_images(base / "images"), "arch": arch}


def make_runs(world, out: Path, epochs: int = 4) -> list[SweepRun]:
    runs = []
    for rate in (0.25, 0.5):
        name = f"coop/sym-{rate}"
        cfg = load_config([config_dir() / "methods" / "coop.yaml"], [
            "data.dataset=folder", f"data.path={world['data']}", "data.shots=2", "data.augment=false",
            f"backbone.arch={world['arch']}", "backbone.weights=null", "noise.type=sym", f"noise.rate={rate}",
            f"optim.epochs={epochs}", "optim.batch_size=3", "optim.eval_batch_size=8", "prompt.n_ctx=2",
            "run.device=cpu", "run.threads=1", f"run.out_dir={out}", f"run.name={name}",
        ])  # fmt: skip
        runs.append(SweepRun(name, {"noise.rate": rate}, cfg))
    return runs


def slow_engine_run(cfg):
    """The engine's run function with a pause after each epoch, so the node can be killed mid-run."""
    import time as _time

    from visprompt.engine import train_run as _train_run

    result = _train_run(cfg, on_epoch_end=lambda epoch, record: _time.sleep(1.0), show_progress=False)
    return {"status": result.status, "resumed_from": result.resumed_from}


def _results(out: Path, runs: list[SweepRun]) -> dict:
    keep = ("top1", "macro_f1", "per_class_accuracy", "epochs", "num_test", "num_train")
    out_ = {}
    for run in runs:
        m = json.loads((out / run.name / "metrics.json").read_text())
        log = [json.loads(line) for line in (out / run.name / "log.jsonl").read_text().splitlines()]
        out_[run.name] = ({k: m[k] for k in keep}, [(r["epoch"], r["loss"]) for r in log])
    return out_


def test_a_sweep_survives_losing_its_worker_node(cluster, world, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", cluster.env["RAY_AUTH_TOKEN"])
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    runs = make_runs(world, tmp_path / "sweep")
    killed: list[float] = []

    def kill_mid_run(progress) -> None:
        logged = [r for r in runs if (r.path / "log.jsonl").is_file() and read_status(r.path) == "running"]
        if not killed and logged:
            _kill_tree(cluster.nodes[1])  # the worker node: raylet, its workers, everything under ray start
            killed.append(time.time())
            cluster.add_worker()

    result = run_sweep(runs, slow_engine_run, address=cluster.address, max_retries=3, poll_s=0.5,
                       on_progress=kill_mid_run)  # fmt: skip
    assert killed, "the worker node was never killed"
    assert result.ok, (result.outcomes, cluster.logs())
    assert all(read_status(r.path) == "done" for r in runs)
    assert any(o.attempts > 1 for o in result.outcomes)  # retried after the node died
    events = [json.loads(line) for line in (tmp_path / "sweep" / "sweep-events.jsonl").read_text().splitlines()]
    assert any(e["event"] == "failed" and e["retry"] for e in events)
    resumed = [json.loads((r.path / "metrics.json").read_text())["resumed_from_epoch"] for r in runs]
    assert any(e and e >= 1 for e in resumed)  # at least one run resumed from its checkpoint, not from scratch

    # the undisturbed runs (the same engine, in this process) give the same report
    reference = make_runs(world, tmp_path / "reference")
    for run in reference:
        train_run(run.config, show_progress=False)
    assert _results(tmp_path / "sweep", runs) == _results(tmp_path / "reference", reference)


def test_without_address_a_sweep_starts_its_own_ray_even_when_a_cluster_runs(cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)  # what an earlier `ray start` leaves for `ray.init()`

    def record_cpus(cfg) -> dict:
        import ray as _ray

        run_dir = Path(cfg.run.out_dir) / cfg.run.name
        (run_dir / "cpus.txt").write_text(str(_ray.cluster_resources().get("CPU")))
        (run_dir / "status").write_text("done\n")
        return {}

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cfg = load_config([], [f"run.out_dir={tmp_path}", "run.name=one"])
    result = run_sweep([SweepRun("one", {}, cfg)], record_cpus, num_cpus=1)
    assert result.ok
    assert float((tmp_path / "one" / "cpus.txt").read_text()) == 1.0  # its own 1-CPU Ray, not the 0+2 CPU cluster
