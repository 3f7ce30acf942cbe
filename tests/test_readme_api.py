"""The README's Python example runs as written (on the shipped testbed, in a fresh folder)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

# ~20 s (a testbed build, two epochs, two passes over the test split): outside the default suite, run by `make test`
# in its own step with the Ray cluster test (marker ``docs``).
pytestmark = [pytest.mark.slow, pytest.mark.docs]


def test_the_readme_python_example_runs(tmp_path: Path) -> None:
    section = README.read_text().split("### From Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    path, top1, *label = lines[0].split()
    assert (tmp_path / path / "metrics.json").is_file() and " ".join(label) == "sym 50%"
    assert float(lines[1]) == float(top1)  # load_run(...).evaluate() recomputes the trained run's top-1 exactly
    assert "torch.Size([3, " in lines[2] and lines[2].count("'") == 6  # three labels, (3, E) features
