"""Table verbs: alias, speeddial, domain, address, dispatcher, lcr, dialplan.

kamctl's syntax where it has one (``kamctl alias add ALIAS@DOMAIN USER@DOMAIN``,
``kamctl dispatcher add SETID URI FLAGS PRIORITY ATTRS DESC``, ``kamctl address add
GRP IP MASK PORT TAG``); straight on the tables unless ``--admin`` is given.
"""

from __future__ import annotations

import argparse
from typing import Any

from google.protobuf.message import Message

from sipmesh.clients.admin_api import AdminApi
from sipmesh.clients.errors import InvalidArgument
from sipmesh.ctl.admin_client import Handler, as_dict, table_text
from sipmesh.gen.sipmesh.v1 import admin_pb2 as pb

STATES = {
    "active": pb.DISPATCHER_STATE_ACTIVE,
    "a": pb.DISPATCHER_STATE_ACTIVE,
    "inactive": pb.DISPATCHER_STATE_INACTIVE,
    "i": pb.DISPATCHER_STATE_INACTIVE,
    "probing": pb.DISPATCHER_STATE_PROBING,
    "p": pb.DISPATCHER_STATE_PROBING,
    "disabled": pb.DISPATCHER_STATE_DISABLED,
    "d": pb.DISPATCHER_STATE_DISABLED,
}
SHORT = {
    "DISPATCHER_STATE_ACTIVE": "AP",
    "DISPATCHER_STATE_INACTIVE": "IP",
    "DISPATCHER_STATE_PROBING": "TP",
    "DISPATCHER_STATE_DISABLED": "DX",
}
MATCH_OPS = {"equal": 0, "0": 0, "regex": 1, "1": 1, "fnmatch": 2, "2": 2}


def split_aor(text: str) -> tuple[str, str]:
    user, sep, domain = text.removeprefix("sip:").partition("@")
    if not user:
        raise InvalidArgument(f"{text!r} is not USER@DOMAIN")
    return user, domain if sep else ""


def _rows(message: Message, field: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = as_dict(message).get(field, [])
    return rows


def _done(reply: pb.WriteReply, what: str) -> tuple[Message, str]:
    return reply, f"{what}: {reply.message or 'done'}"


def add_table_verbs(verbs: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    def verb(name: str, help_text: str) -> Any:
        parser = verbs.add_parser(name, help=help_text)
        return parser.add_subparsers(dest=f"{name}_verb", required=True, parser_class=parser_class)

    def sub(
        group: Any, verb_name: str, name: str, help_text: str, *arguments: tuple[Any, ...]
    ) -> None:
        parser = group.add_parser(name, help=help_text)
        for spec in arguments:
            names, options = spec[0], spec[1] if len(spec) > 1 else {}
            parser.add_argument(names, **options)
        parser.set_defaults(ctl_runner=_runner(), verb_key=(verb_name, name))

    opt: dict[str, Any] = {"nargs": "?", "default": ""}
    num: dict[str, Any] = {"type": int, "nargs": "?", "default": 0}

    g = verb("alias", "aliases (alias_db): add ALIAS@DOMAIN USER@DOMAIN | rm ALIAS@DOMAIN | show")
    sub(g, "alias", "add", "add an alias", ("alias",), ("target",))
    sub(g, "alias", "rm", "remove an alias", ("alias",))
    sub(g, "alias", "show", "list aliases", ("filter", opt))

    g = verb("speeddial", "speed dial: add USER@DOMAIN SHORT URI [DESC] | rm | show")
    sub(
        g,
        "speeddial",
        "add",
        "add an entry",
        ("owner",),
        ("short",),
        ("uri",),
        ("description", opt),
    )
    sub(g, "speeddial", "rm", "remove an entry", ("owner",), ("short",))
    sub(g, "speeddial", "show", "list entries", ("owner", opt))

    g = verb("domain", "domains: add DOMAIN | rm DOMAIN | show")
    sub(g, "domain", "add", "add a domain", ("domain_name", {"metavar": "DOMAIN"}), ("did", opt))
    sub(g, "domain", "rm", "remove a domain", ("domain_name", {"metavar": "DOMAIN"}))
    sub(g, "domain", "show", "list domains")

    g = verb("address", "permissions' address table: add GRP IP [MASK] [PORT] [TAG] | rm | show")
    sub(
        g,
        "address",
        "add",
        "add an entry",
        ("grp", {"type": int}),
        ("ip",),
        ("mask", num),
        ("port", num),
        ("tag", opt),
    )
    sub(
        g,
        "address",
        "rm",
        "remove an entry",
        ("grp", {"type": int}),
        ("ip",),
        ("mask", num),
        ("port", num),
    )
    sub(g, "address", "show", "list entries", ("grp", num))

    g = verb("dispatcher", "dispatcher: show | add | rm | set-state | reload")
    sub(g, "dispatcher", "show", "destinations and states", ("setid", num))
    sub(
        g,
        "dispatcher",
        "add",
        "add SETID URI [FLAGS] [PRIORITY] [ATTRS] [DESC]",
        ("setid", {"type": int}),
        ("uri",),
        ("flags", num),
        ("priority", num),
        ("attrs", opt),
        ("description", opt),
    )
    sub(g, "dispatcher", "rm", "remove SETID URI", ("setid", {"type": int}), ("uri",))
    sub(
        g,
        "dispatcher",
        "set-state",
        "set-state STATE SETID URI (active|inactive|probing|disabled)",
        ("new_state", {"metavar": "STATE"}),
        ("setid", {"type": int}),
        ("uri",),
    )
    sub(g, "dispatcher", "reload", "reload the dispatcher table on every instance")

    g = verb(
        "lcr",
        "least-cost routing: show | gw-add | gw-rm | rule-add | rule-rm | "
        "target-add | target-rm | reload",
    )
    sub(g, "lcr", "show", "gateways, rules, targets", ("lcr_id", num))
    sub(
        g,
        "lcr",
        "gw-add",
        "gw-add LCR_ID NAME IP [PORT]",
        ("lcr_id", {"type": int}),
        ("name",),
        ("ip",),
        ("port", num),
    )
    sub(g, "lcr", "gw-rm", "gw-rm ID", ("id", {"type": int}))
    sub(
        g,
        "lcr",
        "rule-add",
        "rule-add LCR_ID PREFIX [FROM_URI]",
        ("lcr_id", {"type": int}),
        ("prefix",),
        ("from_uri", opt),
    )
    sub(g, "lcr", "rule-rm", "rule-rm ID", ("id", {"type": int}))
    sub(
        g,
        "lcr",
        "target-add",
        "target-add LCR_ID RULE_ID GW_ID PRIORITY [WEIGHT]",
        ("lcr_id", {"type": int}),
        ("rule_id", {"type": int}),
        ("gw_id", {"type": int}),
        ("priority", {"type": int}),
        ("weight", num),
    )
    sub(g, "lcr", "target-rm", "target-rm ID", ("id", {"type": int}))
    sub(g, "lcr", "reload", "reload the LCR tables on every instance")

    g = verb("dialplan", "dialplan: show | add | rm | translate | reload")
    sub(g, "dialplan", "show", "rules", ("dpid", num))
    sub(
        g,
        "dialplan",
        "add",
        "add DPID PR OP MATCH SUBST REPL [ATTRS] (OP: equal|regex|fnmatch)",
        ("dpid", {"type": int}),
        ("pr", {"type": int}),
        ("op",),
        ("match",),
        ("subst",),
        ("repl",),
        ("attrs", opt),
    )
    sub(g, "dialplan", "rm", "rm ID", ("id", {"type": int}))
    sub(g, "dialplan", "translate", "translate DPID INPUT", ("dpid", {"type": int}), ("input",))
    sub(g, "dialplan", "reload", "reload the dialplan on every instance")


def _runner() -> Any:
    from sipmesh.ctl.admin_verbs import run_verb

    return run_verb


# -- handlers ------------------------------------------------------------------------


async def _alias_add(a: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    au, ad = split_aor(a.alias)
    u, d = split_aor(a.target)
    reply = await api.alias_add(pb.Alias(alias_username=au, alias_domain=ad, username=u, domain=d))
    return _done(reply, f"{a.alias} -> {a.target}")


async def _alias_rm(a: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    au, ad = split_aor(a.alias)
    return _done(await api.alias_remove(pb.Alias(alias_username=au, alias_domain=ad)), a.alias)


async def _alias_show(a: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    reply = await api.alias_list(pb.ListRequest(filter=a.filter))
    rows = [
        {
            "alias": f"{r['alias_username']}@{r['alias_domain']}",
            "target": f"{r['username']}@{r['domain']}",
        }
        for r in _rows(reply, "aliases")
    ]
    return reply, table_text(rows, ["alias", "target"])


async def _sd_add(a: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    u, d = split_aor(a.owner)
    reply = await api.speed_dial_add(
        pb.SpeedDial(
            username=u, domain=d, sd_username=a.short, new_uri=a.uri, description=a.description
        )
    )
    return _done(reply, f"{a.owner} {a.short} -> {a.uri}")


async def _sd_rm(a: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    u, d = split_aor(a.owner)
    reply = await api.speed_dial_remove(pb.SpeedDial(username=u, domain=d, sd_username=a.short))
    return _done(reply, f"{a.owner} {a.short}")


async def _sd_show(a: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    u, d = split_aor(a.owner) if a.owner else ("", "")
    reply = await api.speed_dial_list(pb.ListRequest(filter=u, domain=d))
    cols = ["username", "domain", "sd_username", "new_uri", "description"]
    return reply, table_text(_rows(reply, "entries"), cols)


async def _domain_add(a: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    return _done(await api.domain_add(pb.Domain(domain=a.domain_name, did=a.did)), a.domain_name)


async def _domain_rm(a: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    return _done(await api.domain_remove(pb.Domain(domain=a.domain_name)), a.domain_name)


async def _domain_show(a: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    reply = await api.domain_list(pb.ListRequest())
    return reply, table_text(_rows(reply, "domains"), ["domain", "did"])


def _addr(a: argparse.Namespace) -> pb.AddressEntry:
    if a.grp < 0 or a.mask < 0 or a.port < 0:
        raise InvalidArgument("group, mask and port are not negative")
    return pb.AddressEntry(
        grp=a.grp, ip_addr=a.ip, mask=a.mask, port=a.port, tag=getattr(a, "tag", "")
    )


async def _addr_add(a: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    return _done(await api.address_add(_addr(a)), f"{a.ip} in group {a.grp}")


async def _addr_rm(a: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    return _done(await api.address_remove(_addr(a)), f"{a.ip} in group {a.grp}")


async def _addr_show(a: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    reply = await api.address_list(pb.ListRequest(filter=str(a.grp) if a.grp else ""))
    return reply, table_text(
        _rows(reply, "entries"), ["id", "grp", "ip_addr", "mask", "port", "tag"]
    )


def _unsigned(value: int, name: str) -> int:
    if value < 0:
        raise InvalidArgument(f"{name}: not negative")
    return value


async def _ds_show(a: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    reply = await api.dispatcher_list(pb.DispatcherListRequest(setid=_unsigned(a.setid, "setid")))
    rows = [{**r, "state": SHORT.get(r["state"], "?")} for r in _rows(reply, "destinations")]
    cols = ["setid", "destination", "state", "priority", "flags", "attrs", "description"]
    return reply, table_text(rows, cols)


async def _ds_add(a: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    reply = await api.dispatcher_add(
        pb.DispatcherDestination(
            setid=_unsigned(a.setid, "setid"),
            destination=a.uri,
            flags=_unsigned(a.flags, "flags"),
            priority=a.priority,
            attrs=a.attrs,
            description=a.description,
        )
    )
    return _done(reply, f"set {a.setid} {a.uri}")


async def _ds_rm(a: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    reply = await api.dispatcher_remove(
        pb.DispatcherDestination(setid=_unsigned(a.setid, "setid"), destination=a.uri)
    )
    return _done(reply, f"set {a.setid} {a.uri}")


async def _ds_state(a: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    state = STATES.get(a.new_state.lower())
    if state is None:
        raise InvalidArgument(f"state {a.new_state!r}: active, inactive, probing or disabled")
    reply = await api.dispatcher_set_state(
        pb.DispatcherSetStateRequest(
            setid=_unsigned(a.setid, "setid"), destination=a.uri, state=state
        )
    )
    return _done(reply, f"set {a.setid} {a.uri}")


def _reload_text(reply: pb.ReloadReply) -> str:
    lines = [
        f"{r.instance}: {'ok' if r.ok else 'FAILED ' + r.error} {r.version[:12]}"
        for r in reply.results
    ]
    return "\n".join(lines) or "no router instance answered"


async def _ds_reload(a: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    reply = await api.dispatcher_reload(pb.ReloadRequest())
    return reply, _reload_text(reply)


async def _lcr_show(a: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    reply = await api.lcr_list(pb.ListRequest(filter=str(a.lcr_id) if a.lcr_id else ""))
    text = "\n\n".join(
        [
            "gateways:\n"
            + table_text(
                _rows(reply, "gateways"), ["id", "lcr_id", "gw_name", "ip_addr", "hostname", "port"]
            ),
            "rules:\n" + table_text(_rows(reply, "rules"), ["id", "lcr_id", "prefix", "from_uri"]),
            "targets:\n"
            + table_text(
                _rows(reply, "targets"), ["id", "lcr_id", "rule_id", "gw_id", "priority", "weight"]
            ),
        ]
    )
    return reply, text


def _ip_or_host(value: str) -> tuple[str, str]:
    """(ip_addr, hostname): the gateway's address is one or the other."""
    import ipaddress

    try:
        ipaddress.ip_address(value)
    except ValueError:
        return "", value
    return value, ""


async def _lcr_gw_add(a: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    reply = await api.lcr_gateway_add(
        pb.LcrGateway(
            lcr_id=_unsigned(a.lcr_id, "lcr_id"),
            gw_name=a.name,
            port=_unsigned(a.port, "port"),
            ip_addr=_ip_or_host(a.ip)[0],
            hostname=_ip_or_host(a.ip)[1],
        )
    )
    return _done(reply, f"gateway {a.name}")


async def _lcr_rule_add(a: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    reply = await api.lcr_rule_add(
        pb.LcrRule(
            lcr_id=_unsigned(a.lcr_id, "lcr_id"), prefix=a.prefix, from_uri=a.from_uri, enabled=True
        )
    )
    return _done(reply, f"rule {a.prefix}")


async def _lcr_target_add(a: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    reply = await api.lcr_rule_target_add(
        pb.LcrRuleTarget(
            lcr_id=_unsigned(a.lcr_id, "lcr_id"),
            rule_id=_unsigned(a.rule_id, "rule_id"),
            gw_id=_unsigned(a.gw_id, "gw_id"),
            priority=_unsigned(a.priority, "priority"),
            weight=_unsigned(a.weight, "weight"),
        )
    )
    return _done(reply, f"target gw {a.gw_id} of rule {a.rule_id}")


async def _lcr_gw_rm(a: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    return _done(
        await api.lcr_gateway_remove(pb.LcrGateway(id=_unsigned(a.id, "id"))), f"gateway {a.id}"
    )


async def _lcr_rule_rm(a: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    return _done(await api.lcr_rule_remove(pb.LcrRule(id=_unsigned(a.id, "id"))), f"rule {a.id}")


async def _lcr_target_rm(a: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    reply = await api.lcr_rule_target_remove(pb.LcrRuleTarget(id=_unsigned(a.id, "id")))
    return _done(reply, f"target {a.id}")


async def _lcr_reload(a: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    reply = await api.lcr_reload(pb.ReloadRequest())
    return reply, _reload_text(reply)


async def _dp_show(a: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    reply = await api.dialplan_list(pb.DialplanListRequest(dpid=_unsigned(a.dpid, "dpid")))
    cols = ["id", "dpid", "pr", "match_op", "match_exp", "subst_exp", "repl_exp", "attrs"]
    return reply, table_text(_rows(reply, "rules"), cols)


async def _dp_add(a: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    op = MATCH_OPS.get(a.op.lower())
    if op is None:
        raise InvalidArgument(f"match operator {a.op!r}: equal, regex or fnmatch")
    reply = await api.dialplan_add(
        pb.DialplanRule(
            dpid=_unsigned(a.dpid, "dpid"),
            pr=a.pr,
            match_op=op,  # type: ignore[arg-type]
            match_exp=a.match,
            subst_exp=a.subst,
            repl_exp=a.repl,
            attrs=a.attrs,
        )
    )
    return _done(reply, f"dialplan {a.dpid} {a.match}")


async def _dp_rm(a: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    return _done(
        await api.dialplan_remove(pb.DialplanRule(id=_unsigned(a.id, "id"))), f"rule {a.id}"
    )


async def _dp_translate(a: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    reply = await api.dialplan_translate(
        pb.DialplanTranslateRequest(dpid=_unsigned(a.dpid, "dpid"), input=a.input)
    )
    if not reply.matched:
        return reply, f"{a.input}: no rule matched"
    return reply, f"{a.input} -> {reply.output} (rule {reply.rule_id}, attrs {reply.attrs!r})"


async def _dp_reload(a: argparse.Namespace, api: AdminApi) -> tuple[Message, str]:
    reply = await api.dialplan_reload(pb.ReloadRequest())
    return reply, _reload_text(reply)


TABLE_VERBS: dict[tuple[str, str], Handler] = {
    ("alias", "add"): _alias_add,
    ("alias", "rm"): _alias_rm,
    ("alias", "show"): _alias_show,
    ("speeddial", "add"): _sd_add,
    ("speeddial", "rm"): _sd_rm,
    ("speeddial", "show"): _sd_show,
    ("domain", "add"): _domain_add,
    ("domain", "rm"): _domain_rm,
    ("domain", "show"): _domain_show,
    ("address", "add"): _addr_add,
    ("address", "rm"): _addr_rm,
    ("address", "show"): _addr_show,
    ("dispatcher", "show"): _ds_show,
    ("dispatcher", "add"): _ds_add,
    ("dispatcher", "rm"): _ds_rm,
    ("dispatcher", "set-state"): _ds_state,
    ("dispatcher", "reload"): _ds_reload,
    ("lcr", "show"): _lcr_show,
    ("lcr", "gw-add"): _lcr_gw_add,
    ("lcr", "gw-rm"): _lcr_gw_rm,
    ("lcr", "rule-add"): _lcr_rule_add,
    ("lcr", "rule-rm"): _lcr_rule_rm,
    ("lcr", "target-add"): _lcr_target_add,
    ("lcr", "target-rm"): _lcr_target_rm,
    ("lcr", "reload"): _lcr_reload,
    ("dialplan", "show"): _dp_show,
    ("dialplan", "add"): _dp_add,
    ("dialplan", "rm"): _dp_rm,
    ("dialplan", "translate"): _dp_translate,
    ("dialplan", "reload"): _dp_reload,
}
