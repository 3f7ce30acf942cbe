"""``visprompt methods``: the registered methods with their summaries, or one method's recipe."""

from __future__ import annotations

import argparse

from visprompt.config import untrained_values
from visprompt.registry import METHODS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "methods",
        help="list the registered methods, or print one method's recipe",
        description="List the registered methods (built-ins and plugins) with a one-line summary; with a name, print "
        "that method's recipe: the config values it sets under your own layers.",
    )
    parser.add_argument("name", nargs="?", help="a method whose recipe to print")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.name:
        method = METHODS.get(args.name)
        if method.variant_of:
            print(f"# {method.name}: a variant of {method.variant_of}")
        print(f"# {method.summary}")
        for key, value in method.recipe.items():
            print(f"{key}: {value!r}")
        if method.reads is not None:  # what you may change on top; other prompt/selection/loss fields stay as above
            print(f"# reads: {', '.join(method.reads) or 'no prompt, selection or loss field'}")
        if not method.trains:  # its training fields hold these values, whatever the layers set
            held = ", ".join(f"{key}={value!r}" for key, value in untrained_values(method.name).items())
            print(f"# trains nothing: holds {held} (unread), whatever you set")
        return 0
    width = max(len(name) for name in METHODS.names())
    for name, method in METHODS.items():
        variant = f" (variant of {method.variant_of})" if method.variant_of else ""
        print(f"{name:<{width}}  {method.summary}{variant}")
    return 0
