"""``visprompt eval RUN_DIR``: evaluate a run's trained prompt on its test split again."""

from __future__ import annotations

import argparse
import json

from visprompt.commands.config import add_feature_store_argument, feature_store_setting


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="evaluate a trained run on its test split")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by visprompt train")
    parser.add_argument(
        "--data",
        metavar="ROOT",
        help="where the run's data root is now (for folder/CSV data: the folder; default: as saved)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument(
        "--partial", action="store_true", help="use a failed or unfinished run's last checkpoint (with a warning)"
    )
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    parser.add_argument("--per-class", action="store_true", help="also print per-class accuracy")
    add_feature_store_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from visprompt.engine.inference import load_run
    from visprompt.engine.metrics import classification_metrics

    loaded = load_run(
        args.run_dir,
        device=args.device,
        data_root=args.data,
        partial=args.partial,
        feature_store=feature_store_setting(args.feature_store),
    )
    test = loaded.splits.test
    logits = loaded.logits(test)
    labels = torch.tensor([s.label for s in test])
    metrics = classification_metrics(logits.argmax(dim=-1), labels, loaded.splits.classnames)
    if args.json:
        print(json.dumps({"run_dir": args.run_dir, **metrics}, indent=2))
        return 0
    print(f"{args.run_dir}: {loaded.cfg.method.name} on {loaded.splits.name}, {metrics['num_samples']} test images")
    print(f"top-1     {metrics['top1']:6.2f}%")
    print(f"macro-F1  {metrics['macro_f1']:6.2f}%")
    if args.per_class:
        width = max(len(c) for c in metrics["per_class_accuracy"]) if metrics["per_class_accuracy"] else 5
        for name, acc in metrics["per_class_accuracy"].items():
            print(f"  {name:<{width}}  {acc:6.2f}%")
    return 0
