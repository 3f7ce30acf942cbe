"""``visprompt data verify``: check datasets on disk against their published sizes and list bad images."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from visprompt.errors import DataError

__all__ = ["add_parser", "format_table", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="inspect and check datasets")
    sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    verify = sub.add_parser(
        "verify",
        help="check class count, split sizes and images of datasets under a data root",
        description="Check class count and split sizes against the published numbers and list missing or "
        "unreadable images. Exit status 0 when everything matches, 1 when problems were found.",
    )
    verify.add_argument("--root", default="DATA", help="data root holding one folder per dataset (default: DATA)")
    verify.add_argument("--dataset", action="append", help="dataset name (repeatable; default: every one present)")
    verify.add_argument("--path", help="image folder or CSV file, for --dataset folder / csv")
    verify.add_argument("--no-images", action="store_true", help="only check that image files exist")
    verify.add_argument("--decode", action="store_true", help="decode every image fully (slower)")
    verify.add_argument("--workers", type=int, default=8, help="threads opening images (default: 8)")
    verify.add_argument("--max-list", type=int, default=20, help="bad images listed per dataset (default: 20)")
    verify.set_defaults(func=run)


def format_table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """A plain left-aligned text table."""
    table = [list(header), *[list(map(str, r)) for r in rows]]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from visprompt.data.verify import present_datasets, verify_dataset

    names = args.dataset or present_datasets(args.root)
    if not names:
        raise DataError(f"no known dataset folder under {args.root} (pass --dataset NAME, or check --root)")
    rows: list[tuple[str, ...]] = []
    listings: list[str] = []
    status = 0
    for name in names:
        report = verify_dataset(
            name, args.root, args.path, check_images=not args.no_images, decode=args.decode, workers=args.workers
        )
        rows += [(report.dataset, *row) for row in report.rows()]
        for kind, paths in (("missing", report.missing), ("unreadable", report.unreadable)):
            listings += [f"{report.dataset}: {kind}: {p}" for p in paths[: args.max_list]]
            if len(paths) > args.max_list:
                listings.append(f"{report.dataset}: ... and {len(paths) - args.max_list:,} more {kind}")
        listings += [f"{report.dataset}: problem: {p}" for p in report.problems]
        listings += [f"{report.dataset}: note: {n}" for n in report.notes[: args.max_list]]
        if len(report.notes) > args.max_list:
            listings.append(f"{report.dataset}: ... and {len(report.notes) - args.max_list:,} more notes")
        status = status or int(not report.ok)
    print(format_table(rows, ("dataset", "item", "found", "expected", "status")))
    if listings:
        print()
        print("\n".join(listings))
    print()
    print("ok" if status == 0 else "problems found")
    return status
