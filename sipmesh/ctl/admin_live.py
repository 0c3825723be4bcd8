"""Live verbs, always through the admin API: ban, stats, uptime, reload, cfg, capture, ping."""

from __future__ import annotations

import argparse
import time
from typing import Any

from google.protobuf.message import Message

from sipmesh.clients.admin_api import AdminApi
from sipmesh.clients.errors import InvalidArgument
from sipmesh.ctl.admin_client import Handler, table_text
from sipmesh.gen.sipmesh.v1 import admin_pb2 as pb


def add_live_verbs(verbs: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    from sipmesh.ctl.admin_verbs import run_verb

    def leaf(parser: Any, key: tuple[str, str]) -> None:
        parser.set_defaults(ctl_runner=run_verb, verb_key=key)

    ban = verbs.add_parser("ban", help="banned addresses (htable ipban): show | add | rm")
    ban_verbs = ban.add_subparsers(dest="ban_verb", required=True, parser_class=parser_class)
    leaf(ban_verbs.add_parser("show", help="list bans"), ("ban", "show"))
    add = ban_verbs.add_parser("add", help="ban IP [SECONDS] [REASON]")
    add.add_argument("ip")
    add.add_argument("seconds", type=int, nargs="?", default=0)
    add.add_argument("reason", nargs="?", default="admin")
    leaf(add, ("ban", "add"))
    rm = ban_verbs.add_parser("rm", help="lift the ban of IP")
    rm.add_argument("ip")
    leaf(rm, ("ban", "rm"))

    stats = verbs.add_parser("stats", help="statistics of every instance: stats [GROUP]")
    stats.add_argument("group", nargs="?", default="")
    stats.add_argument("--per-instance", action="store_true", help="one column per instance")
    leaf(stats, ("stats", ""))

    leaf(verbs.add_parser("uptime", help="how long every instance has run"), ("uptime", ""))
    leaf(verbs.add_parser("ping", help="is the admin service there"), ("ping", ""))

    reload = verbs.add_parser("reload", help="reload the routing script and tables everywhere")
    reload.add_argument(
        "what", nargs="?", default="all", choices=["all", "script", "dispatcher", "lcr", "dialplan"]
    )
    leaf(reload, ("reload", ""))

    cfg = verbs.add_parser("cfg", help="runtime values: cfg get [GROUP [NAME]] | cfg set G N V")
    cfg_verbs = cfg.add_subparsers(dest="cfg_verb", required=True, parser_class=parser_class)
    get = cfg_verbs.add_parser("get", help="values of a group or of all")
    get.add_argument("group", nargs="?", default="")
    get.add_argument("name", nargs="?", default="")
    leaf(get, ("cfg", "get"))
    put = cfg_verbs.add_parser("set", help="set GROUP NAME VALUE (core debug LEVEL: log level)")
    put.add_argument("group")
    put.add_argument("name")
    put.add_argument("value")
    leaf(put, ("cfg", "set"))

    # kamcmd siptrace.status on|off: the cfg value siptrace.mode, for every edge.
    capture = verbs.add_parser(
        "capture", help="SIP capture (siptrace) on every edge: capture on|off|flagged|show"
    )
    capture.add_argument("mode", choices=["on", "all", "off", "flagged", "show"])
    leaf(capture, ("capture", ""))


async def _ban_show(a: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    reply = await api.ban_list(pb.ListRequest())
    now = time.time()
    rows = [
        {
            "ip": b.ip,
            "reason": b.reason,
            "remaining": f"{max(0, int(b.expires_at - now))}s" if b.expires_at else "until lifted",
        }
        for b in reply.bans
    ]
    return reply, table_text(rows, ["ip", "remaining", "reason"])


async def _ban_add(a: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    if a.seconds < 0:
        raise InvalidArgument("seconds: not negative")
    reply = await api.ban_add(pb.Ban(ip=a.ip, duration=a.seconds, reason=a.reason))
    return reply, f"{a.ip}: {reply.message}"


async def _ban_rm(a: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    reply = await api.ban_remove(pb.Ban(ip=a.ip))
    return reply, f"{a.ip}: {reply.message}"


def _fmt(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:.3f}"


async def _stats(a: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    reply = await api.stats(pb.StatsRequest(group=a.group))
    if a.per_instance:
        lines = [
            f"{i.instance}:{k} = {_fmt(v)}"
            for i in reply.instances
            for k, v in sorted(i.values.items())
        ]
    else:
        # kamctl stats prints "group:name = value", summed over the cluster here.
        lines = [f"{k} = {_fmt(v)}" for k, v in sorted(reply.totals.items())]
    head = f"# {len(reply.instances)} instance(s)"
    return reply, "\n".join([head, *lines])


async def _uptime(a: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    reply = await api.instances(pb.InstancesRequest())
    now = time.time()
    rows = []
    for i in reply.instances:
        up = int(now - i.started_at) if i.started_at else 0
        days, rest = divmod(up, 86400)
        state = "not answering" if i.health.get("instance") == "not answering" else "up"
        rows.append(
            {
                "instance": i.id,
                "state": state,
                "uptime": f"{days}d {rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}",
                "services": ",".join(i.services),
                "version": i.version,
            }
        )
    return reply, table_text(rows, ["instance", "state", "uptime", "services", "version"])


async def _ping(a: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    start = time.monotonic()
    reply = await api.ping(pb.PingAdminRequest())
    rtt = (time.monotonic() - start) * 1000
    return reply, f"pong from {reply.instance} (sipmesh {reply.version}) in {rtt:.1f} ms"


async def _reload(a: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    reply = await api.reload(pb.ReloadRequest(what=a.what))
    lines = [
        f"{r.instance}: {'ok' if r.ok else 'FAILED ' + r.error} {r.version[:12]}"
        for r in reply.results
    ]
    return reply, "\n".join(lines) or "no router instance answered"


async def _cfg_get(a: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    reply = await api.cfg_get(pb.CfgGetRequest(group=a.group, name=a.name))
    lines = [
        f"{v.group}.{v.name} = {v.text if v.WhichOneof('value') == 'text' else v.number}"
        for v in reply.values
    ]
    return reply, "\n".join(lines)


async def _cfg_set(a: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    reply = await api.cfg_set(pb.CfgValue(group=a.group, name=a.name, text=a.value))
    return reply, reply.message


async def _capture(a: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    if a.mode == "show":
        shown = await api.cfg_get(pb.CfgGetRequest(group="siptrace", name="mode"))
        return shown, "\n".join(f"{v.group}.{v.name} = {v.text}" for v in shown.values)
    reply = await api.cfg_set(pb.CfgValue(group="siptrace", name="mode", text=a.mode))
    return reply, reply.message


LIVE_VERBS_HANDLERS: dict[tuple[str, str], Handler] = {
    ("ban", "show"): _ban_show,
    ("ban", "add"): _ban_add,
    ("ban", "rm"): _ban_rm,
    ("stats", ""): _stats,
    ("uptime", ""): _uptime,
    ("ping", ""): _ping,
    ("reload", ""): _reload,
    ("cfg", "get"): _cfg_get,
    ("cfg", "set"): _cfg_set,
    ("capture", ""): _capture,
}
