"""The default routing script: Kamailio's default kamailio.cfg, route by route.

Each function below is the route of the same name in kamailio.cfg (lower-case), and
each ``#!ifdef WITH_X`` block is ``if ctx.features.x``. Differences, all deliberate:

- REQINIT (sanity, Max-Forwards, scanners, OPTIONS keepalive, anti-flood) and the
  transaction checks (t_precheck_trans / t_check_trans for retransmissions and
  CANCEL) run in the edge before the router is asked; a CANCEL or ACK reaching the
  router therefore matched no transaction, and is dropped as kamailio.cfg does.
- REGISTER authentication and save happen in one registrar call
  (``save(authenticate=True)``) instead of auth_check + save: one round trip.
- MANAGE_BRANCH/MANAGE_REPLY are armed only with WITH_NAT, where they do work; the
  edge then makes no callback for branches and replies of plain calls.
- The secure defaults of sipmesh: auth and the not-relaying check are on unless
  switched off (router.features).

Copy this file to start your own script (``router.script: /path/to/routing.py``).
"""

from __future__ import annotations

import re

from sipmesh.router.api import (
    FLB_NATB,
    FLT_ACC,
    FLT_ACCFAILED,
    FLT_ACCMISSED,
    FLT_NATS,
    Ctx,
)
from sipmesh.router.resolve import ResolveError
from sipmesh.router.targets import Target

_RE_CACHE: dict[str, re.Pattern[str]] = {}


def _match(pattern: str, text: str) -> bool:
    compiled = _RE_CACHE.get(pattern)
    if compiled is None:
        compiled = _RE_CACHE[pattern] = re.compile(pattern)
    return compiled.search(text) is not None


async def request_route(ctx: Ctx) -> None:
    # route(REQINIT) already ran in the edge.
    natdetect(ctx)

    # CANCEL processing: the edge relays a CANCEL that matches a transaction itself.
    if ctx.is_method("CANCEL"):
        ctx.drop("CANCEL without transaction")
        return

    # Retransmissions are absorbed by the edge's transaction layer (t_precheck_trans).
    await withindlg(ctx)

    # Only initial requests (no To tag) from here on.
    await auth(ctx)

    # Record routing for dialog forming requests; preloaded Route headers removed.
    ctx.remove_hf("Route")
    if ctx.is_method("INVITE|SUBSCRIBE"):
        ctx.record_route()

    # Account only INVITEs.
    if ctx.is_method("INVITE"):
        ctx.setflag(FLT_ACC)

    # Requests to foreign domains.
    await sipout(ctx)

    # Requests for my local domains.
    await presence(ctx)
    await registrar(ctx)

    if not ctx.ruser:
        ctx.sl_send_reply(484, "Address Incomplete")
        ctx.exit()

    pstn(ctx)
    await location(ctx)


def relay(ctx: Ctx) -> None:
    """route(RELAY): arm the MANAGE_* handlers, then t_relay."""
    if ctx.features.nat:
        if ctx.is_method("INVITE|BYE|SUBSCRIBE|UPDATE") and not ctx.t_is_set("branch_route"):
            ctx.t_on_branch("manage_branch")
        if ctx.is_method("INVITE|SUBSCRIBE|UPDATE") and not ctx.t_is_set("onreply_route"):
            ctx.t_on_reply("manage_reply")
    if ctx.is_method("INVITE") and not ctx.t_is_set("failure_route"):
        ctx.t_on_failure("manage_failure")
    ctx.relay()
    ctx.exit()


async def withindlg(ctx: Ctx) -> None:
    """route(WITHINDLG): requests inside a dialog follow the Record-Route path."""
    if not ctx.has_totag():
        return
    if ctx.loose_route():
        # route(DLGURI): the edge undoes the Contact alias (handle_ruri_alias).
        if ctx.is_method("BYE"):
            ctx.setflag(FLT_ACC)
            ctx.setflag(FLT_ACCFAILED)
        elif ctx.is_method("ACK"):
            # The ACK for a 2xx is its own transaction: forwarded statelessly.
            natmanage(ctx)
            ctx.forward()
            ctx.exit()
        elif ctx.is_method("NOTIFY"):
            # RFC 6665 §4.3: Record-Route in-dialog NOTIFY.
            ctx.record_route()
        relay(ctx)
    if ctx.is_method("SUBSCRIBE") and ctx.uri_is_myself():
        await presence(ctx)
        ctx.exit()
    if ctx.is_method("ACK"):
        # An ACK for a non-2xx final response is absorbed by the edge's transaction;
        # one without a transaction is discarded.
        ctx.drop("ACK without transaction")
        ctx.exit()
    ctx.sl_send_reply(404, "Not here")
    ctx.exit()


async def auth(ctx: Ctx) -> None:
    """route(AUTH): IP authorisation, then digest; no open relay."""
    if ctx.features.auth:
        if ctx.features.ipauth and not ctx.is_method("REGISTER") and ctx.allow_source_address():
            return  # source IP allowed
        if ctx.is_method("REGISTER") and ctx.uri_is_myself():
            return  # authenticated by the registrar in the same call as save()
        if ctx.from_is_myself():
            outcome = await ctx.auth.check(ctx.from_domain, flags=1)
            if not outcome.ok:
                ctx.auth.challenge()
                ctx.exit()
            if not ctx.is_method("PUBLISH"):
                ctx.auth.consume()
        # A caller that is not a local subscriber may only call local destinations.
        if not ctx.from_is_myself() and not ctx.uri_is_myself():
            ctx.sl_send_reply(403, "Not relaying")
            ctx.exit()
    elif not ctx.uri_is_myself():
        # Authentication off: do not relay at all to foreign networks.
        ctx.sl_send_reply(403, "Not relaying")
        ctx.exit()


def natdetect(ctx: Ctx) -> None:
    """route(NATDETECT): the edge tested (nat_uac_test 19); we mark the transaction."""
    if ctx.features.nat and ctx.nat:
        # REGISTER: fix_nated_register via save(fix_nated=True); other requests: the
        # edge adds the Contact alias (set_contact_alias) on the first hop.
        ctx.setflag(FLT_NATS)


def natmanage(ctx: Ctx) -> None:
    """route(NATMANAGE): relay the media when caller or callee is behind NAT."""
    if not ctx.features.nat:
        return
    if ctx.kind in ("request", "branch") and ctx.has_totag() and ctx.check_route_param("nat=yes"):
        ctx.setbflag(FLB_NATB)
    branch = ctx.branch
    natb = ctx.isbflagset(FLB_NATB) or (
        branch is not None and bool(branch.branch_flags & (1 << FLB_NATB))
    )
    if not (ctx.isflagset(FLT_NATS) or natb):
        return
    if ctx.nat_test(8):
        ctx.media.manage("SIP-source-address", "replace-origin", "replace-session-connection")
    else:
        ctx.media.manage("replace-origin", "replace-session-connection")
    if ctx.kind == "branch" and not ctx.has_totag():
        ctx.add_rr_param(";nat=yes")


async def sipout(ctx: Ctx) -> None:
    """route(SIPOUT): requests for foreign domains go to the R-URI (RFC 3263)."""
    if ctx.uri_is_myself():
        return
    ctx.append_hf("P-Hint", "outbound")
    try:
        hops = await ctx.resolve()
    except ResolveError as exc:
        ctx.resolve_error_reply(exc)
        ctx.exit()
    # One target per resolved hop, tried in order (RFC 3263 §4.3 fail-over).
    targets = [Target(ctx.ruri, destination=hop, group=i) for i, hop in enumerate(hops)]
    if ctx.is_method("INVITE") and not ctx.t_is_set("failure_route"):
        ctx.t_on_failure("manage_failure")
    ctx.relay(*targets, serial=len(targets) > 1)
    ctx.exit()


async def presence(ctx: Ctx) -> None:
    """route(PRESENCE): PUBLISH/SUBSCRIBE for us."""
    if not ctx.is_method("PUBLISH|SUBSCRIBE"):
        return
    # With presence on, the presence service is the notifier of message-summary
    # (RFC 3842; presence_mwi: the voicemail server PUBLISHes or NOTIFYs the state
    # there), so the SUBSCRIBE goes to it like any other package below. Without
    # presence, kamailio.cfg's diversion to the voicemail server stays.
    if (
        ctx.is_method("SUBSCRIBE")
        and ctx.hdr("Event") == "message-summary"
        and not ctx.features.presence
    ):
        tovoicemail(ctx)
        # Returns here if no voicemail server is configured.
        ctx.sl_send_reply(404, "No voicemail service")
        ctx.exit()
    if ctx.features.presence:
        if not await ctx.presence.handle():
            ctx.reply(503, "Service Unavailable", [("Retry-After", "5")])
        ctx.exit()
    # Presence not enabled.
    if ctx.is_method("PUBLISH") or not ctx.ruser:
        ctx.sl_send_reply(404, "Not here")
        ctx.exit()


async def registrar(ctx: Ctx) -> None:
    """route(REGISTRAR): save("location")."""
    if not ctx.is_method("REGISTER"):
        return
    nated = ctx.isflagset(FLT_NATS)
    if nated:
        ctx.setbflag(FLB_NATB)
    await ctx.registrar.save(
        "location", authenticate=ctx.features.auth, realm=ctx.to_domain, fix_nated=nated
    )
    ctx.exit()


def pstn(ctx: Ctx) -> None:
    """route(PSTN): numbers matching router.pstn_pattern to the gateway (cfg pstn.*)."""
    if not ctx.features.pstn:
        return
    gw_ip = ctx.cfg_get("pstn", "gw_ip")
    if not gw_ip:
        ctx.log("PSTN routing enabled but pstn.gw_ip not defined")
        return
    user = ctx.ruser or ""
    if not _match(ctx.settings.pstn_pattern, user):
        return
    # Only local users may call the PSTN.
    if not ctx.from_is_myself():
        ctx.sl_send_reply(403, "Not Allowed")
        ctx.exit()
    # Normalise to the international format the gateway expects: 00 -> +.
    if user.startswith("00"):
        user = "+" + user[2:]
    port = ctx.cfg_get("pstn", "gw_port")
    ctx.set_ruri(f"sip:{user}@{gw_ip}" + (f":{port}" if port else ""))
    relay(ctx)


async def location(ctx: Ctx) -> None:
    """route(LOCATION): speed dial, aliases, then the registered contacts."""
    if (
        ctx.features.speeddial
        and _match(ctx.settings.speeddial_pattern, ctx.ruser or "")
        and ctx.sd_lookup()
    ):
        await sipout(ctx)
    if ctx.features.aliasdb and ctx.alias_db_lookup():
        await sipout(ctx)

    ctx.vars["oexten"] = ctx.ruser
    found = await ctx.registrar.lookup("location")
    if not found.found:
        if found.code == -1 and ctx.is_method("MESSAGE") and ctx.features.presence:
            # msilo (kamailio.cfg + msilo's m_store): a MESSAGE (RFC 3428) for a user
            # with no binding is stored by presence (202 Accepted) and delivered when
            # the user registers. Not for -3: the user may be registered after all.
            if not await ctx.presence.handle(store_offline=True):
                ctx.reply(503, "Service Unavailable", [("Retry-After", "5")])
            ctx.exit()
        tovoicemail(ctx)
        if found.code == -2:
            ctx.reply(405, "Method Not Allowed")
        elif found.code == -3:
            # The registrar could not be asked: the user may well be registered.
            ctx.reply(480, "Temporarily Unavailable", [("Retry-After", "5")])
        else:
            ctx.reply(404, "Not Found")
        ctx.exit()

    # When routing via usrloc, log the missed calls too.
    if ctx.is_method("INVITE"):
        ctx.setflag(FLT_ACCMISSED)
    relay(ctx)


def tovoicemail(ctx: Ctx) -> None:
    """route(TOVOICEMAIL): divert to the voicemail server (cfg voicemail.*)."""
    if not ctx.features.voicemail or not ctx.is_method("INVITE|SUBSCRIBE"):
        return
    srv_ip = ctx.cfg_get("voicemail", "srv_ip")
    if not srv_ip:
        ctx.log("VoiceMail routing enabled but IP not defined")
        return
    user = ctx.vars.get("oexten") if ctx.is_method("INVITE") else ctx.ruser
    if not user:
        return
    if ctx.kind == "failure":
        if ctx.vars.get("vm"):
            return  # voicemail itself failed: no second diversion
        ctx.vars["vm"] = True
    prefix = ctx.cfg_get("voicemail", "prefix")
    port = ctx.cfg_get("voicemail", "srv_port")
    ctx.set_ruri(f"sip:{prefix}{user}@{srv_ip}" + (f":{port}" if port else ""))
    ctx.set_du("")
    ctx.clear_branches()
    relay(ctx)


# -- event routes ------------------------------------------------------------------


def manage_branch(ctx: Ctx) -> None:
    """branch_route[MANAGE_BRANCH]."""
    natmanage(ctx)


def manage_reply(ctx: Ctx) -> None:
    """onreply_route[MANAGE_REPLY]."""
    if ctx.t_check_status("[12][0-9][0-9]"):
        natmanage(ctx)


def manage_failure(ctx: Ctx) -> None:
    """failure_route[MANAGE_FAILURE]."""
    natmanage(ctx)
    if ctx.t_is_canceled():
        ctx.exit()
    if ctx.features.block3xx and ctx.t_check_status("3[0-9][0-9]"):
        # Block call redirects based on 3xx replies.
        ctx.reply(404, "Not found")
        ctx.exit()
    if ctx.features.block401407 and ctx.t_check_status("401|407"):
        ctx.reply(404, "Not found")
        ctx.exit()
    if ctx.features.voicemail and ctx.t_check_status("486|408"):
        # Serial forking: busy or no answer goes to voicemail.
        ctx.set_du("")
        tovoicemail(ctx)
        ctx.exit()
