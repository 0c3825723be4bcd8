"""How ``sipmesh ctl`` reaches the admin API: the gRPC admin service, or the tables.

Like kamctl, table verbs (alias, speeddial, domain, address, dispatcher add/rm/show,
lcr, dialplan) work straight on the database given by ``--db`` unless ``--admin``
names an admin service; live verbs (stats, uptime, ping, reload, cfg, ban, ul add,
dispatcher set-state/reload) always go through the admin API at ``--admin HOST:PORT``
(default: this configuration's ``grpc`` address, where ``sipmesh serve`` runs it).

The admin API wants a token (docs/admin.md), found like the address: ``--token``,
else ``$SIPMESH_ADMIN_TOKEN``, else this configuration's ``admin_api.write_token``,
else the token file ``sipmesh serve`` writes (``admin_api.token_file``, default
``./admin-token``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from sipmesh.clients.admin_api import AdminApi, GrpcAdminClient
from sipmesh.clients.errors import Unauthenticated
from sipmesh.runtime.config import ConfigError, SipmeshConfig, load_config, mask_url
from sipmesh.state.errors import StateError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
TOKEN_ENV = "SIPMESH_ADMIN_TOKEN"


Handler = Callable[[argparse.Namespace, AdminApi], Awaitable[tuple[Message, str]]]


def as_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


class VerbError(Exception):
    def __init__(self, message: str, status: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.status = status


def config_of(args: argparse.Namespace) -> SipmeshConfig:
    overrides = {"db": args.db, "state": args.state, "domains": args.domain}
    try:
        return load_config(args.config, overrides=overrides)
    except ConfigError as exc:
        raise VerbError(f"invalid configuration: {exc}", EXIT_USAGE) from None


def admin_target(args: argparse.Namespace, config: SipmeshConfig) -> str:
    target = str(getattr(args, "admin", None) or config.grpc)
    return target.removeprefix("grpc://")


def admin_token(args: argparse.Namespace, config: SipmeshConfig) -> str:
    """``--token``, ``$SIPMESH_ADMIN_TOKEN``, ``admin_api.write_token`` or the token
    file, the first that is set ("" when none is: the call is then refused)."""
    given = getattr(args, "token", None) or os.environ.get(TOKEN_ENV, "")
    if given:
        return str(given).strip()
    configured = config.admin_api.write_token.get_secret_value()
    if configured:
        return configured
    path = config.admin_api.token_path()
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise VerbError(f"cannot read the admin token file {path}: {exc.strerror}") from None


@contextlib.asynccontextmanager
async def open_api(args: argparse.Namespace, *, live: bool) -> AsyncIterator[AdminApi]:
    """The admin API: gRPC when ``--admin`` is given or the verb is live, else the DB."""
    config = config_of(args)
    if live or getattr(args, "admin", None):
        token = admin_token(args, config)
        async with GrpcAdminClient(admin_target(args, config), token=token) as client:
            try:
                yield client
            except Unauthenticated as exc:
                hint = "wrong token" if token else "no token found"
                raise Unauthenticated(
                    f"{exc.message}; {hint}: give --token, set {TOKEN_ENV}, or run where "
                    f"`sipmesh serve` wrote {config.admin_api.token_path()}"
                ) from None
        return
    from sipmesh.admin.service import AdminService
    from sipmesh.state.factory import open_db
    from sipmesh.state.schema import migrate

    try:
        db = await open_db(config.db)
    except StateError as exc:
        raise VerbError(f"cannot open {mask_url(config.db)}: {exc}") from None
    try:
        await migrate(db)
        yield AdminService(config=config, db=db)
    finally:
        await db.close()


def table_text(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A readable, aligned table (kamctl prints rows the same way)."""
    if not rows:
        return "(none)"
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)
