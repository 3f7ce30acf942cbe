"""``visprompt cache info|clear``: the persistent frozen-feature store's size, and emptying it."""

from __future__ import annotations

import argparse
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
    for name, text in (("info", "entries and size on disk"), ("clear", "remove every entry")):
        p = sub.add_parser(name, help=text)
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


def run(args: argparse.Namespace) -> int:
    from visprompt.engine.store import FeatureStore

    root = Path(args.store) if args.store else Path(args.out) / ".features"
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root}: expected the feature store's folder, found a file")
    store = FeatureStore(root)
    if args.cache_command == "clear":
        before = store.info()
        removed = store.clear()
        print(f"{root}: removed {removed} entries ({_size(before['bytes'])})")
        return 0
    info = store.info()
    print(f"{root}: {info['entries']} entries, {_size(info['bytes'])}")
    return 0
