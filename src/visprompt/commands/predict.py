"""``visprompt predict RUN_DIR IMAGES...``: class probabilities of new images under a trained run."""

from __future__ import annotations

import argparse
import json

from visprompt.commands.config import add_feature_store_argument, feature_store_setting


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("predict", help="classify images with a trained run")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by visprompt train")
    parser.add_argument("images", metavar="IMAGES", nargs="+", help="image files")
    parser.add_argument("--json", action="store_true", help="print every class probability as JSON")
    parser.add_argument("--top", type=int, default=3, help="classes shown per image in the table (default 3)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument(
        "--partial", action="store_true", help="use a failed or unfinished run's last checkpoint (with a warning)"
    )
    add_feature_store_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from visprompt.api import image_samples
    from visprompt.engine.inference import load_run

    samples = image_samples(args.images)  # every image checked before the run is loaded
    loaded = load_run(
        args.run_dir, device=args.device, partial=args.partial, feature_store=feature_store_setting(args.feature_store)
    )
    classnames = loaded.splits.classnames
    probs = loaded.logits(samples).softmax(dim=-1)  # (N, C)
    if args.json:
        out = [
            {"image": path, "label": classnames[int(row.argmax())],
             "probabilities": {c: float(p) for c, p in zip(classnames, row.tolist(), strict=True)}}
            for path, row in zip(args.images, probs, strict=True)
        ]  # fmt: skip
        print(json.dumps(out, indent=2))
        return 0
    top = max(1, min(args.top, len(classnames)))
    width = max(len(p) for p in args.images)
    print(f"{'image':<{width}}  {'label':<20}  top-{top} probabilities")
    for path, row in zip(args.images, probs, strict=True):
        values, index = row.topk(top)
        shown = ", ".join(f"{classnames[int(i)]} {float(v):.3f}" for v, i in zip(values, index, strict=True))
        print(f"{path:<{width}}  {classnames[int(index[0])]:<20}  {shown}")
    return 0
