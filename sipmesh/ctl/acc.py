"""``sipmesh ctl acc`` and ``sipmesh ctl cdr``: accounting records straight from the tables.

Like kamctl, table data is read from the database (``--db``):

    sipmesh ctl acc [--missed] [--since T] [--until T] [--user U] [--callid C]
                    [--status S] [--limit N] [--format table|csv|json]
    sipmesh ctl cdr [same filters] [--ended-by REASON]

T is ISO 8601 (UTC unless a zone is given) or epoch seconds; S a SIP code (486) or a
class (4xx). ``--json`` (of ``ctl``) is the same as ``--format json``.
"""

from __future__ import annotations

import argparse
from typing import Any

from sipmesh.accounting.query import (
    Filters,
    QueryError,
    acc_columns,
    cdr_columns,
    make_filters,
    query_acc,
    query_cdrs,
    to_csv,
    to_json,
)

VERBS = ("acc", "cdr")
EXIT_OK, EXIT_USAGE = 0, 2


def _filter_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", metavar="T", default="", help="from this time (inclusive)")
    parser.add_argument("--until", metavar="T", default="", help="up to this time (exclusive)")
    parser.add_argument("--user", metavar="U", default="", help="user or user@domain")
    parser.add_argument("--callid", metavar="C", default="", help="Call-ID")
    parser.add_argument("--status", metavar="S", default="", help="SIP code (486) or class (4xx)")
    parser.add_argument("--limit", type=int, default=1000, help="at most this many rows")
    parser.add_argument(
        "--format", choices=("table", "csv", "json"), default="table", help="output format"
    )


def register_acc_verbs(verbs: Any) -> None:
    """Add ``acc`` and ``cdr`` to the ``ctl`` verbs (``verbs``: its subparsers)."""
    acc = verbs.add_parser("acc", help="accounting records (acc, or missed_calls with --missed)")
    acc.add_argument("--missed", action="store_true", help="list missed_calls instead of acc")
    _filter_args(acc)
    cdr = verbs.add_parser("cdr", help="call detail records")
    _filter_args(cdr)
    cdr.add_argument(
        "--ended-by",
        metavar="REASON",
        default="",
        help="bye, cancel, busy, declined, unanswered, failed, timeout, media-timeout",
    )


def _table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    if not rows:
        return "no records"
    text = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in text)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)) for t in text]
    return "\n".join(line.rstrip() for line in lines)


async def run_acc_verb(args: argparse.Namespace, db: Any) -> tuple[int, str]:
    """Run ``acc`` or ``cdr``: (exit status, text to print)."""
    try:
        filters: Filters = make_filters(
            since=args.since,
            until=args.until,
            user=args.user,
            call_id=args.callid,
            status=args.status,
            end_reason=getattr(args, "ended_by", ""),
            limit=args.limit,
        )
    except QueryError as exc:
        return EXIT_USAGE, f"sipmesh ctl {args.ctl_verb}: {exc}"
    if args.ctl_verb == "acc":
        rows = await query_acc(db, "missed_calls" if args.missed else "acc", filters)
        columns = acc_columns()
    else:
        rows = await query_cdrs(db, filters)
        columns = cdr_columns()
    fmt = "json" if getattr(args, "json", False) else args.format
    if fmt == "json":
        return EXIT_OK, to_json(rows)
    if fmt == "csv":
        return EXIT_OK, to_csv(rows, columns).rstrip("\n")
    return EXIT_OK, _table(rows, columns)
