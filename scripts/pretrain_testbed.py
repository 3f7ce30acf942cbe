"""Pretrain the offline testbed's tiny CLIP on the procedural world (CPU).

    PYTHONPATH=src nice -n 5 python scripts/pretrain_testbed.py --out runs/testbed_pretrain

Defaults: batch 128, 3,500 steps, one torch thread (on a shared, oversubscribed CPU one thread used about a
fifth of the CPU time per step that two did), a hard wall-clock cap of 180 minutes (the schedule anneals by
whichever of steps and time runs out first).

Resumes from ``<out>/state.pt`` when present (the budget counts the time already spent). Any checkpoint the run
writes (``tiny_clip.safetensors`` + ``tiny_clip_config.json`` + ``vocab.json``) is loadable with
``visprompt.testbed.model.load_testbed_model(<out>)``; copy those three files into
``src/visprompt/testbed/assets/`` to ship one.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from visprompt.testbed.model import TinyClipConfig
from visprompt.testbed.pretrain import PretrainConfig, pretrain
from visprompt.testbed.tasks import vocabulary_phrases
from visprompt.testbed.vocab import build_vocabulary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/testbed_pretrain"))
    parser.add_argument("--budget-min", type=float, default=180.0, help="hard wall-clock budget in minutes")
    parser.add_argument("--max-steps", type=int, default=3500)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--save-every-min", type=float, default=4.0)
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[logging.FileHandler(args.out / "pretrain.log"), logging.StreamHandler()],
    )
    cfg = PretrainConfig(
        seed=args.seed,
        batch_size=args.batch_size,
        lr=args.lr,
        max_steps=args.max_steps,
        time_budget_min=args.budget_min,
        save_every_min=args.save_every_min,
        threads=args.threads,
    )
    tokenizer = build_vocabulary(vocabulary_phrases())
    meta = pretrain(args.out, tokenizer, cfg, TinyClipConfig(vocab_size=tokenizer.vocab_size))
    logging.getLogger(__name__).info("done: %s", meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
