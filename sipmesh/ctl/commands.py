"""The ``sipmesh ctl`` verbs of issue 5: add, passwd, rm, show, ul show, ul rm.

Exit status: 0 done, 1 failed at run time (no such subscriber, database down),
2 bad usage or configuration. ``--json`` prints machine-readable output.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from sipmesh.clients.errors import ServiceError
from sipmesh.ctl.admin_client import VerbError, open_api
from sipmesh.ctl.provisioning import (
    CtlError,
    add_subscriber,
    change_password,
    list_subscribers,
    remove_subscriber,
)
from sipmesh.registrar.aor import Aor, AorError, parse_aor
from sipmesh.runtime.config import ConfigError, SipmeshConfig, load_config, mask_url
from sipmesh.state.errors import StateError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def register_ctl(subparsers: Any) -> None:
    """Add ``ctl`` and its verbs to the ``sipmesh`` command's subparsers."""
    ctl = subparsers.add_parser("ctl", help="provisioning and location (kamctl's verbs)")
    ctl.add_argument("--config", metavar="FILE", help="YAML configuration file")
    ctl.add_argument("--db", metavar="URL", help="sqlite:///path or postgresql://…")
    ctl.add_argument("--state", metavar="URL", help="memory or redis://… (for ul)")
    ctl.add_argument("--domain", action="append", metavar="D", help="default domain")
    ctl.add_argument("--json", action="store_true", help="JSON output")
    verbs = ctl.add_subparsers(dest="ctl_verb", required=True, parser_class=type(ctl))

    add = verbs.add_parser("add", help="add a subscriber: add USER@DOMAIN PASSWORD")
    add.add_argument("aor", metavar="USER@DOMAIN")
    add.add_argument("password", metavar="PASSWORD")
    passwd = verbs.add_parser("passwd", help="change a password: passwd USER@DOMAIN PASSWORD")
    passwd.add_argument("aor", metavar="USER@DOMAIN")
    passwd.add_argument("password", metavar="PASSWORD")
    rm = verbs.add_parser("rm", help="remove a subscriber: rm USER@DOMAIN")
    rm.add_argument("aor", metavar="USER@DOMAIN")
    bulk = verbs.add_parser("add-bulk", help="add many subscribers: add-bulk FILE")
    bulk.add_argument("file", metavar="FILE", help="lines of USER@DOMAIN PASSWORD")
    show = verbs.add_parser("show", help="list subscribers: show [USER@DOMAIN]")
    show.add_argument("aor", metavar="USER@DOMAIN", nargs="?")

    ul = verbs.add_parser("ul", help="user location: ul show [AOR] | ul rm AOR [CONTACT]")
    ul_verbs = ul.add_subparsers(dest="ul_verb", required=True, parser_class=type(ctl))
    ul_show = ul_verbs.add_parser("show", help="bindings of one AOR or of all")
    ul_show.add_argument("aor", metavar="AOR", nargs="?")
    ul_rm = ul_verbs.add_parser("rm", help="remove the bindings of an AOR (or one contact)")
    ul_rm.add_argument("aor", metavar="AOR")
    ul_rm.add_argument("contact", metavar="CONTACT", nargs="?", default="")
    ctl.add_argument("--admin", metavar="HOST:PORT", help="admin gRPC API (live verbs)")
    ctl.add_argument(
        "--token",
        metavar="TOKEN",
        help="admin API token (default: $SIPMESH_ADMIN_TOKEN, admin_api.write_token, "
        "or the token file sipmesh serve writes, ./admin-token)",
    )
    from sipmesh.ctl.admin_verbs import add_ul_add, add_verbs  # issue 11's verbs

    add_ul_add(ul_verbs)
    add_verbs(verbs, type(ctl))
    from sipmesh.ctl.acc import register_acc_verbs  # issue 9's verbs: acc, cdr

    register_acc_verbs(verbs)
    ctl.set_defaults(func=run_ctl)


def run_ctl(args: argparse.Namespace) -> int:
    runner = getattr(args, "ctl_runner", None)
    if runner is not None:  # a verb of sipmesh/ctl/admin_verbs.py
        status: int = runner(args)
        return status
    try:
        return asyncio.run(_run(args))
    except CtlError as exc:
        print(f"sipmesh ctl: {exc}", file=sys.stderr)
        return exc.status


def _config(args: argparse.Namespace) -> SipmeshConfig:
    overrides = {"db": args.db, "state": args.state, "domains": args.domain}
    try:
        return load_config(args.config, overrides=overrides)
    except ConfigError as exc:
        raise CtlError(f"invalid configuration: {exc}", EXIT_USAGE) from None


def _aor(text: str, config: SipmeshConfig) -> Aor:
    try:
        return parse_aor(text, config.domains[0] if config.domains else "")
    except AorError as exc:
        raise CtlError(str(exc), EXIT_USAGE) from None


def _out(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2, sort_keys=True) if args.json else text)


async def _run(args: argparse.Namespace) -> int:
    from sipmesh.state.factory import open_db
    from sipmesh.state.schema import migrate

    config = _config(args)
    try:
        db = await open_db(config.db)
    except StateError as exc:
        raise CtlError(f"cannot open {mask_url(config.db)}: {exc}") from None
    try:
        await migrate(db)  # like `serve`: the embedded default needs no `db init`
        return await _dispatch(args, config, db)
    except StateError as exc:
        raise CtlError(f"database or store error: {exc}") from None
    finally:
        await db.close()


async def _dispatch(args: argparse.Namespace, config: SipmeshConfig, db: Any) -> int:
    reg = config.registrar
    verb = args.ctl_verb
    if verb in ("acc", "cdr"):  # sipmesh/ctl/acc.py
        from sipmesh.ctl.acc import run_acc_verb

        status, text = await run_acc_verb(args, db)
        print(text, file=sys.stdout if status == EXIT_OK else sys.stderr)
        return status
    if verb in ("add", "passwd"):
        aor = _aor(args.aor, config)
        op = add_subscriber if verb == "add" else change_password
        await op(db, aor, args.password, store_password=reg.store_password, realm=reg.realm)
        done = "added" if verb == "add" else "password changed"
        _out(args, {"aor": str(aor), "result": done}, f"{aor}: {done}")
        return EXIT_OK
    if verb == "add-bulk":
        from pathlib import Path

        from sipmesh.ctl.bulk import add_bulk, read_bulk_file

        pairs = read_bulk_file(Path(args.file), config.domains[0] if config.domains else "")
        count = await add_bulk(db, pairs, store_password=reg.store_password, realm=reg.realm)
        _out(args, {"added": count}, f"{count} subscriber(s) added")
        return EXIT_OK
    if verb == "rm":
        aor = _aor(args.aor, config)
        await remove_subscriber(db, aor)
        _out(args, {"aor": str(aor), "result": "removed"}, f"{aor}: removed")
        return EXIT_OK
    if verb == "show":
        subs = await list_subscribers(db, _aor(args.aor, config) if args.aor else None)
        lines = [
            f"{s.username}@{s.domain}  ha1={'yes' if s.ha1_stored else 'no'}"
            f"  password={'stored' if s.password_stored else 'not stored'}"
            for s in subs
        ]
        _out(args, [s.to_dict() for s in subs], "\n".join(lines) or "no subscribers")
        return EXIT_OK
    return await _ul(args, config, db)


async def _ul_live(args: argparse.Namespace, config: SipmeshConfig) -> int:
    """``ul show|rm`` on the running registrars through the admin API (``--admin``).

    Like kamctl's ``ul`` over RPC: the live location store, which with embedded state
    (``memory``) only the running process can read.
    """
    aor = str(_aor(args.aor, config)) if args.aor else ""
    try:
        return await _ul_live_calls(args, aor)
    except VerbError as exc:
        raise CtlError(str(exc), exc.status) from None
    except ServiceError as exc:  # unreachable, no or wrong token, …
        raise CtlError(exc.message) from None


async def _ul_live_calls(args: argparse.Namespace, aor: str) -> int:
    from sipmesh.gen.sipmesh.v1 import admin_pb2

    now = time.time()
    async with open_api(args, live=True) as api:
        if args.ul_verb == "show":
            reply = await api.location_show(admin_pb2.LocationShowRequest(aor=aor))
            rows = [
                {
                    "aor": b.aor,
                    "contact": b.contact,
                    "expires": max(0, int(b.expires_at - now)),
                    "q": b.q if b.HasField("q") else None,
                    "received": b.received,
                    "edge_id": b.edge_id,
                    "user_agent": b.user_agent,
                }
                for b in reply.bindings
            ]
            if aor and not rows:
                raise CtlError(f"{aor}: not registered")
            lines = [
                f"{r['aor']}  <{r['contact']}>  expires in {r['expires']}s"
                + (f"  received={r['received']}" if r["received"] else "")
                + (f"  edge={r['edge_id']}" if r["edge_id"] else "")
                for r in rows
            ]
            _out(args, rows, "\n".join(lines) or "no bindings")
            return EXIT_OK
        await api.location_remove(
            admin_pb2.LocationRemoveRequest(aor=aor, contact=args.contact or "")
        )
        _out(args, {"aor": aor, "result": "removed"}, f"{aor}: removed")
        return EXIT_OK


async def _ul(args: argparse.Namespace, config: SipmeshConfig, db: Any) -> int:
    if getattr(args, "admin", None) and args.ul_verb in ("show", "rm"):
        return await _ul_live(args, config)
    from sipmesh.ctl import location
    from sipmesh.registrar.convert import binding_json
    from sipmesh.runtime.backends import key_prefix
    from sipmesh.state.factory import open_location

    reg = config.registrar
    store = (
        None
        if config.state == "memory"
        else open_location(config.state, prefix=key_prefix(config))  # SIPMESH_NAMESPACE
    )
    where = "location store" if store is not None else "location table"
    now = time.time()
    try:
        key = location.key_of(_aor(args.aor, config), reg.use_domain) if args.aor else None
        if args.ul_verb == "show":
            bindings = await location.show(store, db, key, use_domain=reg.use_domain, now=now)
            lines = []
            for b in bindings:
                lines.append(
                    f"{b.aor}  <{b.contact}>  expires in {max(0, int(b.expires_at - now))}s"
                    f"  q={'' if b.q is None else b.q}  {b.transport}"
                    + (f"  received={b.received}" if b.received else "")
                    + (f"  edge={b.edge_id}" if b.edge_id else "")
                    + (f"  path={','.join(b.path)}" if b.path else "")
                )
            if key and not bindings:
                raise CtlError(f"{key}: not registered ({where})")
            data = [binding_json(b, now) for b in bindings]
            _out(args, data, "\n".join(lines) or f"no bindings ({where})")
            return EXIT_OK
        assert key is not None
        removed = await location.remove(
            store,
            db,
            key,
            args.contact,
            use_domain=reg.use_domain,
            persist=reg.db_mode != "none",
            now=now,
        )
        if not removed:
            raise CtlError(f"{key}: no such binding ({where})")
        _out(args, {"aor": key, "removed": removed}, f"{key}: {removed} binding(s) removed")
        return EXIT_OK
    finally:
        if store is not None:
            await store.close()
