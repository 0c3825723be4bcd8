"""The ``sipmesh`` command: serve, config, db, ctl.

Errors a user can fix (bad flag, bad configuration value, unreachable database)
end with one line on stderr and exit status 2 (usage/config) or 1 (run time),
never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from sipmesh import __version__
from sipmesh.runtime.config import ConfigError, SipmeshConfig, effective_config, load_config

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class CliError(Exception):
    """A failure reported as one line; ``status`` is the exit status."""

    def __init__(self, message: str, status: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's default prints usage; keep one line
        raise CliError(f"{self.prog}: {message}", EXIT_USAGE)


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML configuration file")
    parser.add_argument("--target", metavar="T", help="comma-separated services, or all")
    parser.add_argument(
        "--listen", action="append", metavar="PROTO:HOST:PORT", help="SIP listener (repeatable)"
    )
    parser.add_argument("--domain", action="append", metavar="D", help="SIP domain (repeatable)")
    parser.add_argument("--state", metavar="URL", help="memory or redis://…")
    parser.add_argument("--db", metavar="URL", help="sqlite:///path or postgresql://…")
    parser.add_argument("--bus", metavar="URL", help="memory or nats://…")
    parser.add_argument("--http", metavar="HOST:PORT", help="/ready, /live, /metrics")
    parser.add_argument("--grpc", metavar="HOST:PORT", help="inter-service gRPC API")
    parser.add_argument("--admin", metavar="HOST:PORT", help="admin API and web console")
    parser.add_argument("--instance-id", metavar="ID", help="this process's instance name")


def config_from_args(args: argparse.Namespace) -> SipmeshConfig:
    overrides: dict[str, Any] = {
        "target": [args.target] if getattr(args, "target", None) else None,
        "listen": getattr(args, "listen", None),
        "domains": getattr(args, "domain", None),
        "state": getattr(args, "state", None),
        "db": getattr(args, "db", None),
        "bus": getattr(args, "bus", None),
        "http": getattr(args, "http", None),
        "grpc": getattr(args, "grpc", None),
        "admin": getattr(args, "admin", None),
        "instance_id": getattr(args, "instance_id", None),
    }
    try:
        return load_config(getattr(args, "config", None), overrides=overrides)
    except ConfigError as exc:
        raise CliError(f"sipmesh: invalid configuration: {exc}", EXIT_USAGE) from None


def _cmd_serve(args: argparse.Namespace) -> int:
    from sipmesh.runtime.serve import run_server

    config = config_from_args(args)
    return run_server(config)


def _cmd_config_show(args: argparse.Namespace) -> int:
    data = effective_config(config_from_args(args))
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(yaml.safe_dump(data, sort_keys=False), end="")
    return EXIT_OK


def _cmd_db(args: argparse.Namespace) -> int:
    from sipmesh.runtime.dbcmd import run_db_command

    config = config_from_args(args)
    return asyncio.run(run_db_command(args.db_command, config.db))


def _cmd_version(_: argparse.Namespace) -> int:
    print(f"sipmesh {__version__}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sipmesh", description="SIP server platform (Kamailio-style services)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = sub.add_parser("serve", help="run sipmesh services")
    _add_config_flags(serve)
    serve.set_defaults(func=_cmd_serve)

    config = sub.add_parser("config", help="configuration")
    config_sub = config.add_subparsers(dest="config_command", required=True, parser_class=_Parser)
    show = config_sub.add_parser("show", help="print the effective configuration, secrets masked")
    _add_config_flags(show)
    show.add_argument("--json", action="store_true", help="JSON instead of YAML")
    show.set_defaults(func=_cmd_config_show)

    db = sub.add_parser("db", help="database schema (kamdbctl's job)")
    db.add_argument("db_command", choices=["init", "migrate"], help="create or upgrade the schema")
    db.add_argument("--db", metavar="URL", help="sqlite:///path or postgresql://…")
    db.add_argument("--config", metavar="FILE", help="YAML configuration file")
    db.set_defaults(func=_cmd_db)

    from sipmesh.ctl.commands import register_ctl

    register_ctl(sub)

    version = sub.add_parser("version", help="print the version")
    version.set_defaults(func=_cmd_version)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        status: int = args.func(args)
    except CliError as exc:
        print(str(exc), file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
