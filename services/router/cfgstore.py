"""Runtime configuration values (Kamailio's cfg framework: cfg_get / cfg_set).

kamailio.cfg declares values such as ``pstn.gw_ip`` that ``kamcmd cfg.seti`` changes
without a restart. Here they live in the shared KV store (keys ``cfg:router:<group>.
<name>``) so every router instance sees the same value. The hot path never reads the
store: each instance keeps the values in memory and re-reads them all in one
round trip (``get_many``) when told that one changed (a bus broadcast) and, as a
safety net for a lost broadcast, every ``router.cfg_refresh`` seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sipmesh.state.kv import KVStore

KEY_PREFIX = "cfg:router:"


@dataclass(frozen=True, slots=True)
class CfgVar:
    group: str
    name: str
    default: str
    description: str

    @property
    def key(self) -> str:
        return f"{self.group}.{self.name}"


class CfgError(KeyError):
    """An unknown group/name (the admin API answers 404 with the message)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown cfg value"


def router_cfg_vars(initial: Mapping[str, str]) -> list[CfgVar]:
    """The values the default script reads, as kamailio.cfg declares them."""
    return [
        CfgVar("pstn", "gw_ip", initial.get("pstn.gw_ip", ""), "PSTN GW Address"),
        CfgVar("pstn", "gw_port", initial.get("pstn.gw_port", ""), "PSTN GW Port"),
        CfgVar("voicemail", "srv_ip", initial.get("voicemail.srv_ip", ""), "VoiceMail IP Address"),
        CfgVar(
            "voicemail", "srv_port", initial.get("voicemail.srv_port", "5060"), "VoiceMail Port"
        ),
        CfgVar(
            "voicemail",
            "prefix",
            initial.get("voicemail.prefix", ""),
            "prefix put before the user part when diverting to voicemail",
        ),
    ]


class CfgStore:
    """Declared values with defaults, overridden by what the KV store holds."""

    def __init__(self, kv: KVStore | None, variables: list[CfgVar]) -> None:
        self._kv = kv
        self._vars = {v.key: v for v in variables}
        self._values: dict[str, str] = {k: v.default for k, v in self._vars.items()}

    @property
    def variables(self) -> list[CfgVar]:
        return list(self._vars.values())

    def get(self, group: str, name: str) -> str:
        """The current value (from memory; never a round trip)."""
        key = f"{group}.{name}"
        try:
            return self._values[key]
        except KeyError:
            raise CfgError(f"no cfg value {key}") from None

    def values(self, group: str = "", name: str = "") -> list[tuple[str, str, str]]:
        """(group, name, value) of every value matching; empty filters match all."""
        out = [
            (v.group, v.name, self._values[v.key])
            for v in self._vars.values()
            if (not group or v.group == group) and (not name or v.name == name)
        ]
        if (group or name) and not out:
            raise CfgError(f"no cfg value {group or '*'}.{name or '*'}")
        return out

    async def set(self, group: str, name: str, value: str) -> None:
        """Store a new value for every instance; local at once, others on refresh."""
        key = f"{group}.{name}"
        if key not in self._vars:
            raise CfgError(f"no cfg value {key}")
        if self._kv is not None:
            await self._kv.set(KEY_PREFIX + key, value.encode())
        self._values[key] = value

    async def reset(self, group: str, name: str) -> None:
        """Back to the configured default (removes the stored override)."""
        key = f"{group}.{name}"
        if key not in self._vars:
            raise CfgError(f"no cfg value {key}")
        if self._kv is not None:
            await self._kv.delete(KEY_PREFIX + key)
        self._values[key] = self._vars[key].default

    async def refresh(self) -> None:
        """Re-read every value in one round trip."""
        if self._kv is None:
            return
        keys = list(self._vars)
        stored = await self._kv.get_many([KEY_PREFIX + k for k in keys])
        self._values = {
            k: (raw.decode() if raw is not None else self._vars[k].default)
            for k, raw in zip(keys, stored, strict=True)
        }
