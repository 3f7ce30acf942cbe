"""``visprompt config show``: print the resolved run configuration; shared run options for other commands."""

from __future__ import annotations

import argparse

from visprompt.config import RunConfig, load_config, to_yaml
from visprompt.registry import BACKBONES, METHODS, NOISE_TYPES

# Shorthand flags and the config key each one sets.
SHORTHANDS = {
    "root": "data.root",
    "shots": "data.shots",
    "noise": "noise.type",
    "rate": "noise.rate",
    "weights": "backbone.weights",
    "seed": "run.seed",
    "epochs": "optim.epochs",
    "name": "run.name",
    "out": "run.out_dir",
    "device": "run.device",
    "feature_store": "run.feature_store",
}

FEATURE_STORE_HELP = "the frozen-feature store: auto (OUT/.features), a folder, or none (encode every image)"


def _shots(text: str) -> int | str:
    """``--shots``: a positive integer or ``all``."""
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'all', got {text!r}") from None


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every command that resolves a RunConfig accepts."""
    group = parser.add_argument_group("run configuration (later layers win: presets, --config, flags, --set)")
    group.add_argument("--dataset", help="dataset name (loads its preset if one exists)")
    group.add_argument(
        "--backbone", help=f"backbone preset ({', '.join(BACKBONES.names())}) or any open_clip model name"
    )
    group.add_argument("--method", help=f"method and its recipe: {', '.join(METHODS.names())}")
    group.add_argument("--config", action="append", default=[], metavar="FILE", help="YAML file (repeatable)")
    group.add_argument("--root", help="data root holding one folder per dataset")
    group.add_argument("--shots", type=_shots, help="training images per class, or 'all' (every training image)")
    group.add_argument("--noise", help=f"noise type: {', '.join(NOISE_TYPES.names())}")
    group.add_argument("--rate", type=float, help="noise rate in [0, 1)")
    group.add_argument("--weights", help="weights file, open_clip pretrained tag, or 'none' for random init")
    group.add_argument("--seed", type=int)
    group.add_argument("--epochs", type=int)
    group.add_argument("--name", help="run directory name")
    group.add_argument("--out", help="folder holding run directories")
    group.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    group.add_argument("--feature-store", metavar="STORE", help=f"{FEATURE_STORE_HELP} (run.feature_store)")
    group.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides", help="override (repeatable)"
    )


def resolve_config(args: argparse.Namespace) -> RunConfig:
    """The command's layers through the one resolver: presets, ``--config`` files, shorthand flags, ``--set``."""
    overrides: list[str] = []
    for flag, key in SHORTHANDS.items():
        value = getattr(args, flag, None)
        if value is not None:
            if flag in ("weights", "feature_store") and value.lower() == "none":
                value = "null"
            overrides.append(f"{key}={value}")
    return load_config(
        args.config, [*overrides, *args.overrides], dataset=args.dataset, backbone=args.backbone, method=args.method
    )


def add_feature_store_argument(parser: argparse.ArgumentParser) -> None:
    """``--feature-store`` of the commands that rebuild a trained run (eval, predict): default as the run saved it."""
    parser.add_argument(
        "--feature-store", metavar="STORE",
        help=f"{FEATURE_STORE_HELP}; OUT is the folder holding RUN_DIR (default: the run's run.feature_store)",
    )  # fmt: skip


def feature_store_setting(value: str | None) -> str | bool | None:
    """``--feature-store``'s value for :func:`visprompt.engine.inference.load_run`: True (as saved), None (off)."""
    if value is None:
        return True
    return None if value.lower() in ("none", "null") else value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    config = subparsers.add_parser("config", help="inspect run configurations")
    sub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = sub.add_parser("show", help="print the resolved configuration as YAML")
    add_config_arguments(show)
    show.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(to_yaml(resolve_config(args)), end="")
    return 0
