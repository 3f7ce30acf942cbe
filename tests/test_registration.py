"""Explicit registration: a plain ``import visprompt`` (no CLI import) finds every built-in."""

from __future__ import annotations

import json
import subprocess
import sys


def test_a_fresh_interpreter_finds_every_builtin_after_import_visprompt() -> None:
    code = (
        "import json, visprompt;"
        "spec = visprompt.DATASETS.get('testbed-backgrounds');"
        "print(json.dumps({'datasets': visprompt.DATASETS.names(), 'methods': visprompt.METHODS.names(),"
        " 'noise': visprompt.NOISE_TYPES.names(), 'backbones': visprompt.BACKBONES.names(), 'spec': spec.name}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["spec"] == "testbed-backgrounds"
    assert {"dtd", "caltech101", "food101n", "folder", "csv", "testbed-colours", "testbed-scenes"} <= set(
        found["datasets"]
    )
    assert {"zeroshot", "coop", "coop-gce", "cocoop", "nlprompt", "joapr", "visprompt"} <= set(found["methods"])
    assert {"none", "sym", "asym", "pairs-per-class", "asym-semantic", "instance", "open-set"} == set(found["noise"])
    assert {"rn50", "vit-b-16", "testbed"} <= set(found["backbones"])
