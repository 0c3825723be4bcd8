"""The router: routing script, the WITH_* feature switches of kamailio.cfg, cfg values.

Every ``#!define WITH_…`` switch of Kamailio's default kamailio.cfg is a flag under
``router.features``. Defaults are secure (issue 6): digest authentication, the
"403 Not relaying" check and anti-flood are on; an operator switches features off to
open things up. Some switches act in other services (``tls`` and ``antiflood`` in the
edge, ``usrlocdb`` in the registrar, ``jsonrpc`` in the admin API); they live here so
that one place mirrors kamailio.cfg, and the router reports them to its script.
"""

import ipaddress
from typing import Literal

from pydantic import Field, field_validator

from sipmesh.runtime.sections.base import Section


class RouterFeatures(Section):
    auth: bool = Field(True, description="WITH_AUTH: digest authentication of local callers")
    ipauth: bool = Field(False, description="WITH_IPAUTH: trust sources in the address table")
    usrlocdb: bool = Field(False, description="WITH_USRLOCDB: persist the location table")
    presence: bool = Field(False, description="WITH_PRESENCE: PUBLISH/SUBSCRIBE to presence")
    nat: bool = Field(False, description="WITH_NAT: NAT flags and media relay (NATMANAGE)")
    pstn: bool = Field(False, description="WITH_PSTN: numbers matching pstn_pattern to the gateway")
    aliasdb: bool = Field(False, description="WITH_ALIASDB: aliases from the dbaliases table")
    speeddial: bool = Field(False, description="WITH_SPEEDDIAL: short numbers from speed_dial")
    multidomain: bool = Field(False, description="WITH_MULTIDOMAIN: local domains from domain")
    tls: bool = Field(False, description="WITH_TLS: TLS listeners (acted on by the edge)")
    antiflood: bool = Field(True, description="WITH_ANTIFLOOD: pike + ipban (edge)")
    block3xx: bool = Field(False, description="WITH_BLOCK3XX: a 3xx from downstream becomes 404")
    block401407: bool = Field(
        False, description="WITH_BLOCK401407: a 401/407 from downstream becomes 404"
    )
    voicemail: bool = Field(
        False, description="WITH_VOICEMAIL: busy/no answer/offline to voicemail"
    )
    accdb: bool = Field(True, description="WITH_ACCDB: mark transactions for accounting records")
    jsonrpc: bool = Field(False, description="WITH_JSONRPC: JSON-RPC over HTTP (admin API)")


class RouterConfig(Section):
    script: str = Field(
        "", description="routing script: a module name or a .py path; empty: the default script"
    )
    script_timeout: float = Field(1.0, gt=0, description="time budget of one routing decision")
    features: RouterFeatures = Field(default_factory=RouterFeatures)
    aliases: list[str] = Field(
        [], description="more names/addresses that are 'myself' (Kamailio's alias=)"
    )
    ipauth_group: int = Field(1, ge=0, description="address table group of allow_source_address")
    pstn_pattern: str = Field(
        r"^(\+|00)[1-9][0-9]{3,20}$", description="R-URI users routed to the PSTN gateway"
    )
    speeddial_pattern: str = Field(
        r"^[0-9][0-9]$", description="R-URI users looked up in speed_dial (2-digit extensions)"
    )
    pstn_gw_ip: str = Field("", description="initial runtime value pstn.gw_ip (cfg)")
    pstn_gw_port: str = Field("", description="initial runtime value pstn.gw_port (cfg)")
    voicemail_srv_ip: str = Field("", description="initial runtime value voicemail.srv_ip (cfg)")
    voicemail_srv_port: str = Field(
        "5060", description="initial runtime value voicemail.srv_port (cfg)"
    )
    cfg_refresh: float = Field(
        5.0, gt=0, description="seconds between re-reads of runtime cfg values from the KV store"
    )
    version_retention: float = Field(
        600.0,
        gt=0,
        description="seconds a replaced script version still serves its in-flight transactions",
    )
    # RFC 3263 resolution of foreign domains (SIPOUT), services/router/dns.py.
    dns_servers: list[str] = Field(
        [], description="DNS servers IP or IP:port ([v6]:port); empty: /etc/resolv.conf"
    )
    dns_timeout: float = Field(
        0.4, gt=0, description="seconds one DNS server has to answer before it is asked again"
    )
    dns_lifetime: float = Field(
        0.7,
        gt=0,
        description="seconds one RFC 3263 resolution may take, then 408 (at most"
        " 0.8 x script_timeout)",
    )
    dns_cache_size: int = Field(4096, ge=0, description="DNS record sets cached (0: no cache)")
    prefer_ipv6: bool = Field(False, description="try AAAA addresses before A addresses")
    dns_transports: list[Literal["udp", "tcp", "tls", "sctp", "ws", "wss"]] = Field(
        [],
        description="transports RFC 3263 may pick, preferred first; empty: the udp/tcp/tls/sctp"
        " of listen",
    )

    # Dispatcher (services/router/dispatcher.py, dsprobe.py): Kamailio's ds_* parameters.
    ds_ping_interval: float = Field(
        10.0, ge=0, description="seconds between OPTIONS probes of dispatcher destinations (0: off)"
    )
    ds_ping_timeout: float = Field(
        2.0, gt=0, description="seconds a probe waits for its final response (no answer: failure)"
    )
    ds_probing_threshold: int = Field(
        1, ge=1, description="failed probes before an active destination is marked inactive"
    )
    ds_inactive_threshold: int = Field(
        1, ge=1, description="answered probes before an inactive destination is active again"
    )
    ds_ping_reply_codes: str = Field(
        "class=2",
        description="replies that count as alive: Kamailio's 'class=2;code=403;code=488'",
    )
    ds_probing_mode: Literal[0, 1, 2] = Field(
        1,
        description="what is probed: 0 inactive or flagged (flags 8), 1 every destination,"
        " 2 inactive ones",
    )
    ds_ping_from: str = Field("sip:dispatcher@localhost", description="From URI of the probes")
    ds_ping_via_edge: bool = Field(
        True, description="send probes through the SIP edge (else from a UDP socket of the router)"
    )
    ds_state_refresh: float = Field(
        5.0, gt=0, description="seconds between re-reads of destination states from the KV store"
    )
    ds_failover_codes: str = Field(
        "5[0-9][0-9]|408",
        description="statuses (regular expression) after which ds.should_failover() is true",
    )
    ds_call_lifetime: float = Field(
        7200.0, gt=0, description="seconds a call counts for call-load (alg 10) without its end"
    )

    @field_validator("dns_servers")
    @classmethod
    def _dns_servers(cls, value: list[str]) -> list[str]:
        for item in value:
            host = item.strip()
            if host.startswith("["):
                host = host[1:].split("]", 1)[0]
            elif host.count(":") == 1:
                host = host.split(":")[0]
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise ValueError(f"DNS server {item!r} is not IP, IP:port or [IPv6]:port") from None
        return value
