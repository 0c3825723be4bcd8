"""Dispatcher, LCR and dialplan tables (kamctl dispatcher / lcr / dialplan).

Destination states are live state in Kamailio (kamcmd ds.set_state): here they
live in the shared key/value store (``ds:state:<setid>:<destination>``) so every
instance sees an operator's change at once; without an entry a destination is in
the state its ``flags`` column gives (Kamailio's bits: 1 inactive, 4 disabled,
8 probing).
"""

from __future__ import annotations

import fnmatch
import re

from sipmesh.admin import validate as v
from sipmesh.admin.base import AdminBase, audited
from sipmesh.clients.errors import AlreadyExists, InvalidArgument, NotFound
from sipmesh.gen.sipmesh.v1 import admin_pb2
from sipmesh.state.db import Row
from sipmesh.state.errors import ConstraintViolation

DS_STATE_KEY = "ds:state:"
_State = admin_pb2.DispatcherState
_STATE_NAMES = {
    _State.DISPATCHER_STATE_ACTIVE: "AP",
    _State.DISPATCHER_STATE_INACTIVE: "IP",
    _State.DISPATCHER_STATE_PROBING: "TP",
    _State.DISPATCHER_STATE_DISABLED: "DX",
}
_BY_NAME = {name: state for state, name in _STATE_NAMES.items()}


def state_from_flags(flags: int) -> admin_pb2.DispatcherState.ValueType:
    if flags & 4:
        return _State.DISPATCHER_STATE_DISABLED
    if flags & 1:
        return _State.DISPATCHER_STATE_INACTIVE
    if flags & 8:
        return _State.DISPATCHER_STATE_PROBING
    return _State.DISPATCHER_STATE_ACTIVE


def _dp_rule(r: Row) -> admin_pb2.DialplanRule:
    return admin_pb2.DialplanRule(
        id=int(r["id"]),
        dpid=int(r["dpid"]),
        pr=int(r["pr"]),
        match_op=int(r["match_op"]),  # type: ignore[arg-type]
        match_exp=r["match_exp"],
        match_len=int(r["match_len"]),
        subst_exp=r["subst_exp"],
        repl_exp=r["repl_exp"],
        attrs=r["attrs"],
    )


def translate(rules: list[admin_pb2.DialplanRule], text: str) -> admin_pb2.DialplanTranslateReply:
    """Kamailio's dp_translate: the first rule by priority that matches rewrites."""
    for rule in sorted(rules, key=lambda r: (r.pr, r.id)):
        if rule.match_len and len(text) != rule.match_len:
            continue
        op = rule.match_op
        if op == admin_pb2.DialplanRule.MATCH_OP_EQUAL:
            hit = text == rule.match_exp
        elif op == admin_pb2.DialplanRule.MATCH_OP_REGEX:
            hit = re.search(rule.match_exp, text) is not None
        else:
            hit = fnmatch.fnmatchcase(text, rule.match_exp)
        if not hit:
            continue
        if rule.subst_exp:
            repl = re.sub(r"\\(\d)", r"\\g<\1>", rule.repl_exp)
            try:
                out = re.sub(rule.subst_exp, repl, text, count=1)
            except (re.error, IndexError) as exc:
                raise InvalidArgument(f"rule {rule.id}: bad substitution: {exc}") from None
        else:
            out = rule.repl_exp or text
        return admin_pb2.DialplanTranslateReply(
            matched=True, output=out, attrs=rule.attrs, rule_id=rule.id
        )
    return admin_pb2.DialplanTranslateReply(matched=False, output=text)


class RoutingTableOps(AdminBase):
    # -- dispatcher ----------------------------------------------------------------------

    async def dispatcher_list(
        self, request: admin_pb2.DispatcherListRequest, *, timeout: float | None = None
    ) -> admin_pb2.DispatcherListReply:
        v.number(request.setid, "setid", v.UINT_INTEGER)
        rows = await self.db.fetch(
            "SELECT * FROM dispatcher WHERE ($1 = 0 OR setid = $1) ORDER BY setid, priority, id",
            request.setid,
        )
        stored: list[bytes | None] = []
        if self.kv is not None and rows:
            stored = await self.kv.get_many(
                [f"{DS_STATE_KEY}{r['setid']}:{r['destination']}" for r in rows]
            )
        out = []
        for i, r in enumerate(rows):
            state = state_from_flags(int(r["flags"]))
            if stored and stored[i] is not None:
                state = _BY_NAME.get((stored[i] or b"").decode(), state)
            out.append(
                admin_pb2.DispatcherDestination(
                    id=int(r["id"]),
                    setid=int(r["setid"]),
                    destination=r["destination"],
                    flags=int(r["flags"]),
                    priority=int(r["priority"]),
                    attrs=r["attrs"],
                    description=r["description"],
                    state=state,
                )
            )
        return admin_pb2.DispatcherListReply(destinations=out)

    @audited("dispatcher.add")
    async def dispatcher_add(
        self, request: admin_pb2.DispatcherDestination, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        setid = v.number(request.setid, "setid", v.UINT_INTEGER)
        dest = v.sip_uri(request.destination, "destination", 192)
        v.number(request.flags, "flags", v.UINT_INTEGER)
        v.number(request.priority, "priority", v.INTEGER)
        v.text(request.attrs, "attrs", 128)
        v.text(request.description, "description", 64)
        async with self.db.transaction() as tx:
            if await tx.fetchval(
                "SELECT COUNT(*) FROM dispatcher WHERE setid = $1 AND destination = $2", setid, dest
            ):
                raise AlreadyExists(f"destination {dest} already in set {setid}")
            await tx.execute(
                "INSERT INTO dispatcher (setid, destination, flags, priority, attrs, description) "
                "VALUES ($1, $2, $3, $4, $5, $6)",
                setid,
                dest,
                request.flags,
                request.priority,
                request.attrs,
                request.description,
            )
        return admin_pb2.WriteReply(affected=1, message="added")

    @audited("dispatcher.rm")
    async def dispatcher_remove(
        self, request: admin_pb2.DispatcherDestination, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        if request.id:
            v.number(request.id, "id", v.UINT_INTEGER)
            n = await self.db.execute("DELETE FROM dispatcher WHERE id = $1", request.id)
            what = f"dispatcher id {request.id}"
        else:
            setid = v.number(request.setid, "setid", v.UINT_INTEGER)
            dest = v.text(request.destination, "destination", 192, required=True)
            n = await self.db.execute(
                "DELETE FROM dispatcher WHERE setid = $1 AND destination = $2", setid, dest
            )
            what = f"destination {dest} in set {setid}"
        if not n:
            raise NotFound(f"no {what}")
        return admin_pb2.WriteReply(affected=n, message="removed")

    @audited("dispatcher.set_state")
    async def dispatcher_set_state(
        self, request: admin_pb2.DispatcherSetStateRequest, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        setid = v.number(request.setid, "setid", v.UINT_INTEGER)
        dest = v.text(request.destination, "destination", 192, required=True)
        name = _STATE_NAMES.get(request.state)
        if name is None:
            raise InvalidArgument("state: one of active, inactive, probing, disabled")
        if not await self.db.fetchval(
            "SELECT COUNT(*) FROM dispatcher WHERE setid = $1 AND destination = $2", setid, dest
        ):
            raise NotFound(f"no destination {dest} in set {setid}")
        await self.need_kv().set(f"{DS_STATE_KEY}{setid}:{dest}", name.encode())
        return admin_pb2.WriteReply(affected=1, message=f"state {name}")

    # -- lcr -----------------------------------------------------------------------------

    async def lcr_list(
        self, request: admin_pb2.ListRequest, *, timeout: float | None = None
    ) -> admin_pb2.LcrTables:
        lcr_id = 0
        if request.filter:
            try:
                lcr_id = v.number(int(request.filter), "filter", v.SMALLINT)
            except ValueError:
                raise InvalidArgument("filter: the lcr_id, a number") from None
        where = "WHERE ($1 = 0 OR lcr_id = $1) ORDER BY id"
        gws = await self.db.fetch(f"SELECT * FROM lcr_gw {where}", lcr_id)
        rules = await self.db.fetch(f"SELECT * FROM lcr_rule {where}", lcr_id)
        targets = await self.db.fetch(f"SELECT * FROM lcr_rule_target {where}", lcr_id)
        return admin_pb2.LcrTables(
            gateways=[
                admin_pb2.LcrGateway(
                    id=int(g["id"]),
                    lcr_id=int(g["lcr_id"]),
                    gw_name=g["gw_name"] or "",
                    ip_addr=g["ip_addr"] or "",
                    hostname=g["hostname"] or "",
                    port=int(g["port"] or 0),
                    uri_scheme=int(g["uri_scheme"] or 0),
                    transport=int(g["transport"] or 0),
                    params=g["params"] or "",
                    strip=int(g["strip"] or 0),
                    prefix=g["prefix"] or "",
                    tag=g["tag"] or "",
                    flags=int(g["flags"]),
                    defunct=bool(g["defunct"]),
                )
                for g in gws
            ],
            rules=[
                admin_pb2.LcrRule(
                    id=int(r["id"]),
                    lcr_id=int(r["lcr_id"]),
                    prefix=r["prefix"] or "",
                    from_uri=r["from_uri"] or "",
                    request_uri=r["request_uri"] or "",
                    mt_tvalue=r["mt_tvalue"] or "",
                    stopper=int(r["stopper"]),
                    enabled=bool(r["enabled"]),
                )
                for r in rules
            ],
            targets=[
                admin_pb2.LcrRuleTarget(
                    id=int(t["id"]),
                    lcr_id=int(t["lcr_id"]),
                    rule_id=int(t["rule_id"]),
                    gw_id=int(t["gw_id"]),
                    priority=int(t["priority"]),
                    weight=int(t["weight"]),
                )
                for t in targets
            ],
        )

    async def _remove_by_id(self, table: str, row_id: int) -> admin_pb2.WriteReply:
        v.number(row_id, "id", (1, v.UINT_INTEGER[1]))
        n = await self.db.execute(f"DELETE FROM {table} WHERE id = $1", row_id)
        if not n:
            raise NotFound(f"no {table} row with id {row_id}")
        return admin_pb2.WriteReply(affected=n, message="removed")

    @audited("lcr.gw.add")
    async def lcr_gateway_add(
        self, request: admin_pb2.LcrGateway, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        g = request
        v.number(g.lcr_id, "lcr_id", (1, v.SMALLINT[1]))
        v.text(g.gw_name, "gw_name", 128, required=True)
        if g.ip_addr:
            v.ip_address(g.ip_addr, "ip_addr")
        v.text(g.hostname, "hostname", 64)
        if not g.ip_addr and not g.hostname:
            raise InvalidArgument("ip_addr or hostname: one is required")
        for name, value in (("port", g.port), ("uri_scheme", g.uri_scheme)):
            v.number(value, name, v.SMALLINT)
        for name, value in (("transport", g.transport), ("strip", g.strip)):
            v.number(value, name, v.SMALLINT)
        v.text(g.params, "params", 64)
        v.text(g.prefix, "prefix", 16)
        v.text(g.tag, "tag", 64)
        v.number(g.flags, "flags", v.UINT_INTEGER)
        await self.db.execute(
            "INSERT INTO lcr_gw (lcr_id, gw_name, ip_addr, hostname, port, params, uri_scheme, "
            "transport, strip, prefix, tag, flags, defunct) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            g.lcr_id,
            g.gw_name,
            g.ip_addr or None,
            g.hostname or None,
            g.port or None,
            g.params,
            g.uri_scheme or 1,
            g.transport or None,
            g.strip,
            g.prefix or None,
            g.tag or None,
            g.flags,
            1 if g.defunct else None,
        )
        return admin_pb2.WriteReply(affected=1, message="added")

    @audited("lcr.gw.rm")
    async def lcr_gateway_remove(
        self, request: admin_pb2.LcrGateway, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        return await self._remove_by_id("lcr_gw", request.id)

    @audited("lcr.rule.add")
    async def lcr_rule_add(
        self, request: admin_pb2.LcrRule, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        r = request
        v.number(r.lcr_id, "lcr_id", (1, v.SMALLINT[1]))
        v.text(r.prefix, "prefix", 16)
        v.text(r.from_uri, "from_uri", 64)
        v.text(r.request_uri, "request_uri", 64)
        v.text(r.mt_tvalue, "mt_tvalue", 128)
        v.number(r.stopper, "stopper", (0, 1))
        try:
            async with self.db.transaction() as tx:
                if await tx.fetchval(
                    "SELECT COUNT(*) FROM lcr_rule WHERE lcr_id = $1 AND "
                    "COALESCE(prefix, '') = $2 AND COALESCE(from_uri, '') = $3",
                    r.lcr_id,
                    r.prefix,
                    r.from_uri,
                ):
                    raise AlreadyExists(f"lcr rule {r.lcr_id}/{r.prefix}/{r.from_uri}")
                await tx.execute(
                    "INSERT INTO lcr_rule (lcr_id, prefix, from_uri, request_uri, mt_tvalue, "
                    "stopper, enabled) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    r.lcr_id,
                    r.prefix or None,
                    r.from_uri or None,
                    r.request_uri or None,
                    r.mt_tvalue or None,
                    r.stopper,
                    1 if r.enabled else 0,
                )
        except ConstraintViolation:
            raise AlreadyExists(f"lcr rule {r.lcr_id}/{r.prefix}/{r.from_uri}") from None
        return admin_pb2.WriteReply(affected=1, message="added")

    @audited("lcr.rule.rm")
    async def lcr_rule_remove(
        self, request: admin_pb2.LcrRule, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        return await self._remove_by_id("lcr_rule", request.id)

    @audited("lcr.target.add")
    async def lcr_rule_target_add(
        self, request: admin_pb2.LcrRuleTarget, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        t = request
        v.number(t.lcr_id, "lcr_id", (1, v.SMALLINT[1]))
        v.number(t.priority, "priority", v.SMALLINT)
        v.number(t.weight, "weight", v.UINT_INTEGER)
        for name, value in (("rule_id", t.rule_id), ("gw_id", t.gw_id)):
            v.number(value, name, (1, v.UINT_INTEGER[1]))
        async with self.db.transaction() as tx:
            if not await tx.fetchval("SELECT COUNT(*) FROM lcr_rule WHERE id = $1", t.rule_id):
                raise NotFound(f"no lcr rule {t.rule_id}")
            if not await tx.fetchval("SELECT COUNT(*) FROM lcr_gw WHERE id = $1", t.gw_id):
                raise NotFound(f"no lcr gateway {t.gw_id}")
            if await tx.fetchval(
                "SELECT COUNT(*) FROM lcr_rule_target WHERE rule_id = $1 AND gw_id = $2",
                t.rule_id,
                t.gw_id,
            ):
                raise AlreadyExists(f"target gw {t.gw_id} of rule {t.rule_id}")
            await tx.execute(
                "INSERT INTO lcr_rule_target (lcr_id, rule_id, gw_id, priority, weight) "
                "VALUES ($1, $2, $3, $4, $5)",
                t.lcr_id,
                t.rule_id,
                t.gw_id,
                t.priority,
                t.weight or 1,
            )
        return admin_pb2.WriteReply(affected=1, message="added")

    @audited("lcr.target.rm")
    async def lcr_rule_target_remove(
        self, request: admin_pb2.LcrRuleTarget, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        return await self._remove_by_id("lcr_rule_target", request.id)

    # -- dialplan ------------------------------------------------------------------------

    @audited("dialplan.add")
    async def dialplan_add(
        self, request: admin_pb2.DialplanRule, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        r = request
        v.number(r.dpid, "dpid", v.UINT_INTEGER)
        v.number(r.pr, "pr", v.INTEGER)
        v.text(r.match_exp, "match_exp", 64, required=True)
        v.number(r.match_len, "match_len", v.UINT_INTEGER)
        v.text(r.subst_exp, "subst_exp", 64)
        v.text(r.repl_exp, "repl_exp", 256)
        v.text(r.attrs, "attrs", 64)
        if r.match_op == admin_pb2.DialplanRule.MATCH_OP_REGEX:
            v.regex(r.match_exp, "match_exp")
        if r.subst_exp:
            v.regex(r.subst_exp, "subst_exp")
        await self.db.execute(
            "INSERT INTO dialplan (dpid, pr, match_op, match_exp, match_len, subst_exp, "
            "repl_exp, attrs) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            r.dpid,
            r.pr,
            int(r.match_op),
            r.match_exp,
            r.match_len,
            r.subst_exp,
            r.repl_exp,
            r.attrs,
        )
        return admin_pb2.WriteReply(affected=1, message="added")

    @audited("dialplan.rm")
    async def dialplan_remove(
        self, request: admin_pb2.DialplanRule, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        return await self._remove_by_id("dialplan", request.id)

    async def _dp_rules(self, dpid: int) -> list[admin_pb2.DialplanRule]:
        v.number(dpid, "dpid", v.UINT_INTEGER)
        rows = await self.db.fetch(
            "SELECT * FROM dialplan WHERE ($1 = 0 OR dpid = $1) ORDER BY dpid, pr, id", dpid
        )
        return [_dp_rule(r) for r in rows]

    async def dialplan_list(
        self, request: admin_pb2.DialplanListRequest, *, timeout: float | None = None
    ) -> admin_pb2.DialplanListReply:
        return admin_pb2.DialplanListReply(rules=await self._dp_rules(request.dpid))

    async def dialplan_translate(
        self, request: admin_pb2.DialplanTranslateRequest, *, timeout: float | None = None
    ) -> admin_pb2.DialplanTranslateReply:
        v.text(request.input, "input", 256)
        rules = [r for r in await self._dp_rules(request.dpid) if r.dpid == request.dpid]
        return translate(rules, request.input)
