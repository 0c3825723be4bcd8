"""``ctx.ds``, ``ctx.lcr``, ``ctx.dp``: dispatcher, least-cost routing, dialplan.

What a later route of the same transaction needs (the destinations or gateways
still to try, the original R-URI user) is kept in the transaction's ``vars``
(``_ds_*``, ``_lcr_*``), so ``ds.next()`` / ``lcr.next_gw()`` in a failure route
work on whichever router instance runs it (see txstate.py). Nothing here waits for
another service or store: the tables and states are in memory.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from sipmesh.router.dispatcher import (
    ALG_CALL_LOAD,
    Destination,
    SelectKeys,
    host_port,
)
from sipmesh.router.lcr import Gateway
from sipmesh.router.targets import Target

if TYPE_CHECKING:
    from sipmesh.router.api import Ctx
    from sipmesh.router.env import RouterEnv

_DS_SET, _DS_DST, _DS_POS, _DS_MODE, _DS_LOAD = (
    "_ds_set",
    "_ds_dst",
    "_ds_pos",
    "_ds_mode",
    "_ds_load",
)
_LCR_GWS, _LCR_USER, _LCR_ID = "_lcr_gws", "_lcr_user", "_lcr_id"
_MODES = ("dst", "domain", "ruri")


def failover_wanted(ctx: Ctx, codes: str) -> bool:
    """The branch just tried failed with a status matching ``codes`` (408 = timeout).

    The last branch's status is used (the destination ``ds.next()`` moves away
    from), falling back to the transaction's best status ($T_reply_code).
    """
    statuses = ctx.branch_statuses
    status = statuses[-1] if statuses and statuses[-1] else ctx.status
    return bool(status) and re.fullmatch(codes, str(status)) is not None


def _auth_username(ctx: Ctx) -> str:
    for name in ("proxy-authorization", "authorization"):
        value = ctx.hdr(name)
        if value:
            m = re.search(r'username\s*=\s*"?([^",]*)', value, re.IGNORECASE)
            if m:
                return m.group(1)
    return ""


class DispatcherFacet:
    """ds_select_dst / ds_select_domain / ds_next_dst / ds_mark_dst / ds_is_from_list."""

    def __init__(self, ctx: Ctx, env: RouterEnv) -> None:
        self._ctx = ctx
        self._env = env

    def select(
        self, setid: int, alg: int = 4, *, limit: int = 0, mode: str = "dst", key: str | None = None
    ) -> bool:
        """Choose a destination of ``setid`` with algorithm ``alg`` (Kamailio's numbers).

        ``mode`` "dst" sets $du (ds_select_dst), "domain" the R-URI host:port
        (ds_select_domain), "ruri" the whole R-URI. ``limit`` caps the destinations
        kept for failover; ``key`` is what algorithm 7 hashes (default: R-URI user).
        False when the set has no usable destination.
        """
        if mode not in _MODES:
            raise ValueError(f"ds.select mode must be one of {_MODES}")
        ctx = self._ctx
        keys = SelectKeys(
            call_id=ctx.call_id,
            from_uri=ctx.from_uri,
            to_uri=ctx.to_uri,
            ruri=ctx.ruri,
            auth_user=ctx.auth_user or _auth_username(ctx),
            key=key if key is not None else (ctx.ruser or ""),
        )
        dests = self._env.dispatcher.select(setid, alg, keys, limit)
        if not dests:
            return False
        ctx.vars[_DS_SET] = setid
        ctx.vars[_DS_DST] = " ".join(d.uri for d in dests)
        ctx.vars[_DS_POS] = 0
        ctx.vars[_DS_MODE] = mode
        if alg == ALG_CALL_LOAD and ctx.method == "INVITE":
            ctx.vars[_DS_LOAD] = True
            self._env.dispatcher.call_started(ctx.call_id, dests[0])
        self._apply(dests[0].uri)
        return True

    def _uris(self) -> list[str]:
        value = self._ctx.vars.get(_DS_DST)
        return value.split() if isinstance(value, str) else []

    def _apply(self, uri: str) -> None:
        mode = self._ctx.vars.get(_DS_MODE, "dst")
        if mode == "domain":
            host, port = host_port(uri)
            self._ctx.set_rhost(host, port)
        elif mode == "ruri":
            self._ctx.set_ruri(uri)
        else:
            self._ctx.set_du(uri)

    def next(self) -> bool:
        """ds_next_dst: move to the next destination of the selection; False at the end."""
        uris = self._uris()
        pos = self._ctx.vars.get(_DS_POS)
        position = (pos if isinstance(pos, int) else 0) + 1
        if position >= len(uris):
            return False
        self._ctx.vars[_DS_POS] = position
        if self._ctx.vars.get(_DS_LOAD):
            dest = self._destination(uris[position])
            if dest is not None:
                self._env.dispatcher.call_started(self._ctx.call_id, dest)
        self._apply(uris[position])
        return True

    def _destination(self, uri: str) -> Destination | None:
        setid = self._ctx.vars.get(_DS_SET)
        if not isinstance(setid, int):
            return None
        return self._env.dispatcher.tables.find(setid, uri)

    @property
    def dst(self) -> str:
        """The destination in use ("" before ``select``)."""
        uris = self._uris()
        pos = self._ctx.vars.get(_DS_POS)
        index = pos if isinstance(pos, int) else 0
        return uris[index] if index < len(uris) else ""

    @property
    def remaining(self) -> list[str]:
        """Destinations ``next()`` will still offer."""
        pos = self._ctx.vars.get(_DS_POS)
        return self._uris()[(pos if isinstance(pos, int) else 0) + 1 :]

    def target(self) -> Target:
        """A relay target for the current destination, with its ``socket`` attribute."""
        dest = self._destination(self.dst)
        return Target(self._ctx.ruri, self._ctx.du, socket=dest.socket if dest else "")

    def targets(self) -> list[Target]:
        """Every selected destination as a target (algorithm 12: fork to all)."""
        out = []
        for uri in self._uris():
            dest = self._destination(uri)
            out.append(Target(self._ctx.ruri, uri, socket=dest.socket if dest else ""))
        return out

    def should_failover(self, codes: str | None = None) -> bool:
        """t_check_status("5[0-9][0-9]|408") on the branch just tried (configurable)."""
        return failover_wanted(self._ctx, codes or self._env.settings.ds_failover_codes)

    def mark(self, state: str = "ip") -> bool:
        """ds_mark_dst: set the state of the current destination for every instance."""
        setid = self._ctx.vars.get(_DS_SET)
        dst = self.dst
        if not isinstance(setid, int) or not dst:
            return False
        self._env.dispatcher.set_state_soon(setid, dst, state)
        return True

    def is_from_list(self, setid: int = -1) -> bool:
        """ds_is_from_list: the request comes from a destination (of ``setid``)."""
        found = self._env.dispatcher.is_from_list(self._ctx.src_ip, self._ctx.src_port, setid)
        return found is not None


class LcrFacet:
    """load_gws / next_gw of Kamailio's lcr module."""

    def __init__(self, ctx: Ctx, env: RouterEnv) -> None:
        self._ctx = ctx
        self._env = env

    def load_gws(
        self,
        lcr_id: int,
        user: str | None = None,
        from_uri: str | None = None,
        ruri: str | None = None,
    ) -> list[Gateway]:
        """The gateways for the R-URI user (or ``user``), best first; kept for next_gw."""
        ctx = self._ctx
        number = (ctx.ruser or "") if user is None else user
        selected = self._env.lcr.load_gws(
            lcr_id,
            number,
            ctx.from_uri if from_uri is None else from_uri,
            ctx.ruri if ruri is None else ruri,
            ctx.method,
        )
        ctx.vars[_LCR_ID] = lcr_id
        ctx.vars[_LCR_USER] = number
        ctx.vars[_LCR_GWS] = ",".join(str(s.gw.id) for s in selected)
        return [s.gw for s in selected]

    @property
    def gateways(self) -> list[Gateway]:
        """Gateways next_gw will still use."""
        ids = self._ctx.vars.get(_LCR_GWS)
        gws = self._env.lcr.gateways
        out = []
        for text in ids.split(",") if isinstance(ids, str) and ids else []:
            gw = gws.get(int(text))
            if gw is not None:
                out.append(gw)
        return out

    def next_gw(self) -> bool:
        """Rewrite the R-URI (and $du) for the next gateway; False when none is left.

        Sets ``vars["lcr_gw"]`` (gw_name), ``vars["lcr_tag"]`` and ``vars["lcr_flags"]``.
        """
        ctx = self._ctx
        remaining = self.gateways
        if not remaining:
            ctx.vars[_LCR_GWS] = ""
            return False
        gw = remaining[0]
        ctx.vars[_LCR_GWS] = ",".join(str(g.id) for g in remaining[1:])
        user = ctx.vars.get(_LCR_USER)
        ruri, du = gw.target(user if isinstance(user, str) else "")
        ctx.set_ruri(ruri)
        ctx.set_du(du)
        ctx.vars["lcr_gw"] = gw.name
        ctx.vars["lcr_tag"] = gw.tag
        ctx.vars["lcr_flags"] = gw.flags
        return True

    def should_failover(self, codes: str | None = None) -> bool:
        """The gateway just tried failed with a status in ``codes`` (default as ds)."""
        return failover_wanted(self._ctx, codes or self._env.settings.ds_failover_codes)


class DialplanFacet:
    """dp_translate / dp_match of Kamailio's dialplan module."""

    def __init__(self, ctx: Ctx, env: RouterEnv) -> None:
        self._ctx = ctx
        self._env = env

    def translate(self, dpid: int, value: str | None = None) -> tuple[str, str] | None:
        """(output, attrs) for ``value`` (default: the R-URI user), None when no rule applies."""
        text = (self._ctx.ruser or "") if value is None else value
        return self._env.dialplan.translate(dpid, text)

    def translate_ruser(self, dpid: int) -> bool:
        """dp_translate(dpid, "$rU/$rU"): rewrite the R-URI user; attrs in vars["dp_attrs"]."""
        result = self.translate(dpid)
        if result is None:
            return False
        self._ctx.set_ruser(result[0])
        self._ctx.vars["dp_attrs"] = result[1]
        return True

    def match(self, dpid: int, value: str | None = None) -> bool:
        """dp_match: some rule of ``dpid`` matches ``value`` (default: the R-URI user)."""
        text = (self._ctx.ruser or "") if value is None else value
        return self._env.dialplan.match(dpid, text) is not None
