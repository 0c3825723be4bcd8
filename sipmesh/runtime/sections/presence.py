"""The presence server and message store (Kamailio's presence, presence_xml,
presence_dialoginfo, presence_mwi and msilo modules; docs/presence.md)."""

from typing import Literal

from pydantic import Field

from sipmesh.runtime.sections.base import Section


class PresenceConfig(Section):
    # -- presence: subscriptions and publications --------------------------------------
    max_expires: int = Field(3600, ge=1, description="longest subscription or publication")
    min_expires: int = Field(
        60, ge=0, description="shorter non-zero Expires get 423 Interval Too Brief; 0 = no minimum"
    )
    default_expires: int = Field(
        3600, ge=1, description="Expires of a SUBSCRIBE/PUBLISH that carries none (RFC 3856/3903)"
    )
    policy: Literal["allow", "domain", "watchers"] = Field(
        "allow",
        description="who may watch a presentity: allow = everyone, domain = watchers of the "
        "same domain, watchers = per-watcher allow/block in the watchers table (unknown "
        "watchers stay pending and are reported through presence.winfo)",
    )
    server_address: str = Field(
        "",
        description="Contact URI of the subscription dialogs (Kamailio's server_address); "
        "empty: the listener the SUBSCRIBE arrived on",
    )
    sweep_interval: float = Field(
        5.0, gt=0, description="seconds between expiry sweeps (Kamailio's timer_period)"
    )
    initial_notify_delay_ms: int = Field(
        20,
        ge=0,
        description="delay of the first NOTIFY after the SUBSCRIBE's response, so it follows "
        "the 2xx on the wire (RFC 6665 §4.1.2.4 lets UAs accept either order; many do not)",
    )
    notify_timeout_ms: int = Field(
        0, ge=0, description="NOTIFY transaction timeout; 0 = the edge's default (Timer F)"
    )
    dialog_linger: float = Field(
        2.0,
        ge=0,
        description="seconds a terminated call stays in the dialog package state before it "
        "is dropped (watchers see the terminated state first)",
    )
    # -- msilo -------------------------------------------------------------------------
    msilo_max_messages: int = Field(
        50, ge=0, description="offline messages stored per user; 0 = unlimited (max_messages)"
    )
    msilo_expire_time: int = Field(
        259200, ge=1, description="seconds an offline message is kept (msilo expire_time)"
    )
