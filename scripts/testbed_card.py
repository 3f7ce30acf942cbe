"""Ship a testbed pretraining checkpoint: copy it into the package assets, measure it, write MODEL_CARD.md.

    PYTHONPATH=src python scripts/testbed_card.py --run runs/testbed_pretrain [--coop coop_results.json]

``--coop`` is a JSON file {task: {"coop_clean": acc, "coop_noise75": acc}} with accuracies in [0, 1] measured
by the engine; without it the CoOp columns read "n/a".
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from visprompt.testbed.card import EVAL_NAME, export_assets, measure, write_model_card
from visprompt.testbed.model import ASSETS

PRETRAIN_COMMAND = "PYTHONPATH=src nice -n 5 python scripts/pretrain_testbed.py --out runs/testbed_pretrain"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="pretraining run folder to ship (default: re-measure the assets)")
    parser.add_argument("--assets", type=Path, default=ASSETS)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--coop", type=Path, help="JSON with CoOp accuracies per task (engine or quick check)")
    parser.add_argument("--coop-source", default="measured by the training engine.", help="how CoOp was measured")
    parser.add_argument("--command", default=PRETRAIN_COMMAND, help="the pretraining command, for the card")
    parser.add_argument("--note", action="append", default=[], help="extra line for the card's pretraining section")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.run is not None:
        export_assets(args.run, args.assets)
    evaluation = {**measure(args.assets, args.test_per_class), "test_per_class": args.test_per_class}
    (args.assets / EVAL_NAME).write_text(json.dumps(evaluation, indent=2) + "\n")
    coop = json.loads(args.coop.read_text()) if args.coop else None
    print(write_model_card(args.assets, evaluation, args.command, coop, args.note, args.coop_source).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
