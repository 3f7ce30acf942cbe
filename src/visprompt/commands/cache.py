"""``visprompt cache info|clear|prune``: the persistent frozen-feature store's size, emptying or bounding it."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from visprompt.errors import ConfigError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    cache = subparsers.add_parser(
        "cache",
        help="size of the frozen-feature store, or clear it",
        description="The frozen image features runs share (run.feature_store: by default <out_dir>/.features). "
        "Entries are rebuilt on demand, so clearing only costs the next runs their encoding time.",
    )
    sub = cache.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    actions = (
        ("info", "entries and size on disk"),
        ("clear", "remove every entry"),
        ("prune", "remove the least recently used entries until the store fits --max-size"),
    )
    for name, text in actions:
        p = sub.add_parser(name, help=text)
        if name == "prune":
            p.add_argument("--max-size", required=True, metavar="SIZE", help="e.g. 500M, 2G, 1.5GiB, or bytes")
        where = p.add_mutually_exclusive_group()
        where.add_argument(
            "--out", default="runs", help="the runs' out_dir; the store is OUT/.features (default: runs)"
        )
        where.add_argument("--store", help="the store's folder, when run.feature_store names one")
        p.set_defaults(func=run)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str) -> int:
    """``"2G"``, ``"500MiB"``, ``"1.5 GB"``, ``"1048576"`` -> bytes (binary units: K = 1024)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgtKMGT]?)(?:i?[bB])?\s*", text)
    if not match:
        raise ConfigError(f"--max-size: expected a size such as 500M, 2G or a number of bytes, got {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def run(args: argparse.Namespace) -> int:
    from visprompt.engine.store import FeatureStore

    root = Path(args.store) if args.store else Path(args.out) / ".features"
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root}: expected the feature store's folder, found a file")
    store = FeatureStore(root)
    if args.cache_command == "prune":
        limit = parse_size(args.max_size)
        removed, freed = store.prune(limit)
        info = store.info()
        print(f"{root}: removed {removed} entries ({_size(freed)}); {info['entries']} left, {_size(info['bytes'])}")
        return 0
    if args.cache_command == "clear":
        before = store.info()
        removed = store.clear()
        print(f"{root}: removed {removed} entries ({_size(before['bytes'])})")
        return 0
    info = store.info()
    print(f"{root}: {info['entries']} entries, {_size(info['bytes'])}")
    return 0
