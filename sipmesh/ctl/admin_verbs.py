"""kamctl's remaining verbs over the admin API (issue 11).

alias, speeddial, domain, address, dispatcher, lcr, dialplan, ban, stats, uptime,
reload, cfg, ping and ``ul add``. Output is an aligned table (or ``--json``); exit
status 0 done, 1 failed at run time (not found, duplicate, unreachable, or some
instance did not answer a cluster-wide verb), 2 bad usage or arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from google.protobuf.message import Message

from sipmesh.clients.admin_api import AdminApi
from sipmesh.clients.errors import InvalidArgument, ServiceError
from sipmesh.ctl.admin_client import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    Handler,
    VerbError,
    as_dict,
    open_api,
)
from sipmesh.ctl.admin_live import LIVE_VERBS_HANDLERS, add_live_verbs
from sipmesh.ctl.admin_tables import TABLE_VERBS, add_table_verbs
from sipmesh.gen.sipmesh.v1 import admin_pb2 as pb

# verb -> whether it concerns live state (always through the admin API).
LIVE_VERBS = {"ban", "stats", "uptime", "reload", "cfg", "capture", "ping"}
LIVE_SUBVERBS = {
    ("dispatcher", "set-state"),
    ("dispatcher", "reload"),
    ("lcr", "reload"),
    ("dialplan", "reload"),
    ("ul", "add"),
}


def add_verbs(verbs: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """Register the verbs on ``sipmesh ctl``'s subparsers."""
    add_table_verbs(verbs, parser_class)
    add_live_verbs(verbs, parser_class)


def add_ul_add(ul_verbs: Any) -> None:
    """``ul add AOR CONTACT [EXPIRES] [Q]`` on the existing ``ul`` verb."""
    add = ul_verbs.add_parser("add", help="add a static binding: ul add AOR CONTACT [EXPIRES] [Q]")
    add.add_argument("aor", metavar="AOR")
    add.add_argument("contact", metavar="CONTACT")
    add.add_argument(
        "expires", metavar="EXPIRES", type=int, nargs="?", default=0, help="seconds; 0 = permanent"
    )
    add.add_argument("q", metavar="Q", type=float, nargs="?")
    add.set_defaults(ctl_runner=run_verb, verb_key=("ul", "add"))


def run_verb(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(args))
    except VerbError as exc:
        print(f"sipmesh ctl: {exc}", file=sys.stderr)
        return exc.status


async def _run(args: argparse.Namespace) -> int:
    key: tuple[str, str] = args.verb_key
    handler = HANDLERS[key]
    live = key[0] in LIVE_VERBS or key in LIVE_SUBVERBS
    try:
        async with open_api(args, live=live) as api:
            reply, text = await handler(args, api)
    except InvalidArgument as exc:
        raise VerbError(exc.message, EXIT_USAGE) from None
    except ServiceError as exc:
        raise VerbError(exc.message, EXIT_FAILURE) from None
    print(json.dumps(as_dict(reply), indent=2, sort_keys=True) if args.json else text)
    missing = list(getattr(reply, "missing_instances", ()))
    if isinstance(reply, pb.InstancesReply):
        missing = [i.id for i in reply.instances if i.health.get("instance") == "not answering"]
    if missing:
        print(f"sipmesh ctl: not answering: {', '.join(missing)}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


async def _ul_add(args: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    request = pb.LocationAddRequest(
        aor=args.aor, contact=args.contact, expires=max(0, args.expires)
    )
    if args.q is not None:
        request.q = args.q
    reply = await api.location_add(request)
    life = f"{args.expires}s" if args.expires else "permanent"
    return reply, f"{args.aor}: <{args.contact}> added ({life})"


HANDLERS: dict[tuple[str, str], Handler] = {
    ("ul", "add"): _ul_add,
    **TABLE_VERBS,
    **LIVE_VERBS_HANDLERS,
}
