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
import yaml

ray = pytest.importorskip("ray")

from visprompt.config import load_config  # noqa: E402
from visprompt.engine import train_run  # noqa: E402
from visprompt.engine.rundir import RunDir  # noqa: E402
from visprompt.sweep import expand_sweep, load_sweep, read_status, run_sweep  # noqa: E402
from visprompt.sweep.grid import SweepRun  # noqa: E402
from worlds import tiny_world  # noqa: E402

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
        p = _free_ports(6)
        args += ["--block", "--disable-usage-stats", "--node-ip-address=127.0.0.1",
                 f"--node-manager-port={p[0]}", f"--object-manager-port={p[1]}",
                 f"--metrics-export-port={p[2]}", f"--dashboard-agent-listen-port={p[3]}",
                 f"--dashboard-agent-grpc-port={p[4]}", f"--runtime-env-agent-port={p[5]}"]  # fmt: skip
        out = open(Path(self.temp) / log, "w")  # noqa: SIM115 (kept open for the node's life)
        proc = subprocess.Popen([RAY, "start", *args], env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self.nodes.append(proc)
        return proc

    def start_head(self) -> None:
        dashboard = _free_ports(1)[0]
        head = self._start(["--head", f"--port={self.port}", "--num-cpus=0", f"--temp-dir={self.temp}",
                            "--include-dashboard=false", f"--dashboard-port={dashboard}"], "head.log")  # fmt: skip
        for _ in range(40):  # wait until the head's GCS listens (or ray start has given up)
            assert head.poll() is None, self.logs()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                break
            time.sleep(0.5)

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
    base = tmp_path_factory.mktemp("cluster")
    return tiny_world(base, train=5, test=2, size=12)


GRID_BASE = {"method": "coop", "data.dataset": "folder", "data.shots": 2, "data.augment": False,
             "backbone.weights": None, "noise.type": "sym", "optim.epochs": 4, "optim.batch_size": 3,
             "optim.eval_batch_size": 8, "prompt.n_ctx": 2, "run.device": "cpu", "run.threads": 1}  # fmt: skip

# The sweep's driver: its own process (Ray reads the auth token when it is imported), the engine's run function
# with a pause after each epoch so that the node can be killed mid-run.
DRIVER = """
import json, sys
from visprompt.sweep import expand_sweep, load_sweep, run_sweep

def slow_engine_run(cfg):
    import time
    from visprompt.engine import train_run
    result = train_run(cfg, on_epoch_end=lambda epoch, record: time.sleep(1.0), show_progress=False)
    return {"status": result.status}

runs = expand_sweep(load_sweep(sys.argv[1], out_dir=sys.argv[2]))
result = run_sweep(runs, slow_engine_run, address=sys.argv[3], max_retries=3, poll_s=0.5)
print(json.dumps({"ok": result.ok, "outcomes": [[o.name, o.status, o.attempts, o.error] for o in result.outcomes]}))
"""


def write_grid(world, path: Path) -> Path:
    base = {**GRID_BASE, "data.path": str(world["data"]), "backbone.arch": str(world["arch"])}
    path.write_text(yaml.safe_dump({"base": base, "grid": {"noise.rate": [0.25, 0.5]}}))
    return path


def _results(runs: list[SweepRun]) -> dict:
    keep = ("top1", "macro_f1", "per_class_accuracy", "epochs", "num_test", "num_train")
    out = {}
    for run in runs:
        m = json.loads((run.path / "metrics.json").read_text())
        log = [json.loads(line) for line in (run.path / "log.jsonl").read_text().splitlines()]
        out[run.name] = ({k: m[k] for k in keep}, [(r["epoch"], r["loss"]) for r in log])
    return out


def _resumable(run: SweepRun) -> bool:
    """A running run whose checkpoint and resume state agree on an epoch >= 1.

    The checkpoint is written just before the resume state; killing the node between the two leaves a run that
    starts afresh by design (``RunDir.load_state``), so waiting for the checkpoint alone made this test flaky.
    """
    if read_status(run.path) != "running":
        return False
    state = RunDir(run.path).load_state()  # both files are replaced atomically: never read half-written
    return state is not None and state["epoch"] >= 1


def test_a_sweep_survives_losing_its_worker_node(cluster, world, tmp_path) -> None:
    grid = write_grid(world, tmp_path / "grid.yaml")
    runs = expand_sweep(load_sweep(grid, out_dir=tmp_path / "sweep"))
    (tmp_path / "driver.py").write_text(DRIVER)
    env = {**cluster.env, "PYTHONPATH": os.pathsep.join(sys.path), "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, str(tmp_path / "driver.py"), str(grid), str(tmp_path / "sweep"), cluster.address]
    driver = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and driver.poll() is None:  # kill the node once a run can resume
            if any(_resumable(r) for r in runs):
                break
            time.sleep(0.2)
        assert driver.poll() is None, driver.communicate()
        _kill_tree(cluster.nodes[1])  # the worker node: raylet, its workers, everything under its ray start
        cluster.add_worker()
        out, err = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            _kill_tree(driver)
    assert driver.returncode == 0, (err[-3000:], cluster.logs())
    result = json.loads(out.strip().splitlines()[-1])
    assert result["ok"], (result, cluster.logs())
    assert any(attempts > 1 for _, _, attempts, _ in result["outcomes"])  # retried after the node died
    events = [json.loads(line) for line in (tmp_path / "sweep" / "sweep-events.jsonl").read_text().splitlines()]
    assert any(e["event"] == "failed" and e["retry"] for e in events)
    resumed = [json.loads((r.path / "metrics.json").read_text())["resumed_from_epoch"] for r in runs]
    assert any(e and e >= 1 for e in resumed)  # resumed from a checkpoint, not started again

    # the undisturbed runs (the same engine, in this process) give the same results, epoch by epoch
    reference = expand_sweep(load_sweep(grid, out_dir=tmp_path / "reference"))
    for run in reference:
        train_run(run.config, show_progress=False)
    assert _results(runs) == _results(reference)


def test_without_address_a_sweep_starts_its_own_ray_even_when_a_cluster_runs(cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)  # what an earlier `ray start` leaves for `ray.init()`

    def record_cpus(cfg) -> dict:
        import ray as _ray

        run_dir = Path(cfg.run.out_dir) / cfg.run.name
        (run_dir / "cpus.txt").write_text(str(_ray.cluster_resources().get("CPU")))
        (run_dir / "nice.txt").write_text(str(os.getpriority(os.PRIO_PROCESS, 0)))
        (run_dir / "status").write_text("done\n")
        return {}

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cfg = load_config([], [f"run.out_dir={tmp_path}", "run.name=one"])
    result = run_sweep([SweepRun("one", {}, cfg)], record_cpus, num_cpus=1)
    assert result.ok
    assert float((tmp_path / "one" / "cpus.txt").read_text()) == 1.0  # its own 1-CPU Ray, not the 0+2 CPU cluster
    # its workers run at the sweep's priority, not at Ray's default nice 15 (starved on a shared machine)
    assert int((tmp_path / "one" / "nice.txt").read_text()) == os.getpriority(os.PRIO_PROCESS, 0)


def test_a_niced_sweep_runs_its_workers_at_its_own_niceness_not_twice_it(tmp_path) -> None:
    """Ray adds its worker niceness to what the workers inherit, so `nice -n 4 visprompt sweep` must give runs
    at nice 4 (a sweep that passed its own niceness to Ray gave them 8, and nice 10 gave 19)."""
    script = f"""
import json, os, sys
from pathlib import Path
from visprompt.config import load_config
from visprompt.sweep import run_sweep
from visprompt.sweep.grid import SweepRun

def record(cfg):
    run_dir = Path(cfg.run.out_dir) / cfg.run.name
    (run_dir / "nice.txt").write_text(str(os.getpriority(os.PRIO_PROCESS, 0)))
    (run_dir / "status").write_text("done\\n")
    return {{}}

cfg = load_config([], ["run.out_dir={tmp_path}", "run.name=one"])
print(json.dumps({{"ok": run_sweep([SweepRun("one", {{}}, cfg)], record, num_cpus=1).ok,
                  "driver": os.getpriority(os.PRIO_PROCESS, 0)}}))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_worker_niceness")}
    base = os.getpriority(os.PRIO_PROCESS, 0)
    out = subprocess.run(["nice", "-n", "4", sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=300, check=True).stdout  # fmt: skip
    result = json.loads(out.strip().splitlines()[-1])
    assert result["ok"] and result["driver"] == min(base + 4, 19)
    assert int((tmp_path / "one" / "nice.txt").read_text()) == result["driver"]
