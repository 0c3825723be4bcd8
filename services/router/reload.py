"""Script versions: the active one, and the replaced ones still finishing transactions.

A reload (``sipmesh ctl reload``, or the bus broadcast every router instance
receives) loads the new script in isolation first (runner.load_script_checked); only
a complete, checked version replaces the active one, and on any error the active one
stays and the error is reported. Every Decision carries the hash of the version
that made it in its context blob, so the branch, reply and failure routes of an
in-flight transaction run under the version that started it. Replaced versions are
kept for ``router.version_retention`` seconds (longer than the longest INVITE
transaction: fr_inv_timer plus margin), then dropped; a transaction that outlives
that (or reaches an instance that never had its version) runs under the active one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from sipmesh.router.runner import LoadedScript, ScriptLoadError, load_script_checked


@dataclass(frozen=True)
class VersionInfo:
    """What ``sipmesh ctl reload``/versions shows for an instance."""

    script: str
    path: str
    hash: str
    loaded_at: float


@dataclass(frozen=True)
class ReloadResult:
    ok: bool
    version: VersionInfo
    error: str = ""
    changed: bool = False


class ScriptVersions:
    def __init__(
        self, initial: LoadedScript, *, retention: float, clock: Callable[[], float]
    ) -> None:
        self._active = initial
        self._retired: dict[str, tuple[LoadedScript, float]] = {}
        self._retention = retention
        self._clock = clock
        self._lock = asyncio.Lock()

    @property
    def active(self) -> LoadedScript:
        return self._active

    def info(self) -> VersionInfo:
        a = self._active
        return VersionInfo(a.spec, a.path, a.hash, a.loaded_at)

    def get(self, version: str) -> LoadedScript:
        """The version that started a transaction, or the active one if it is gone."""
        active = self._active
        if not version or version == active.hash:
            return active
        kept = self._retired.get(version)
        return kept[0] if kept is not None else active

    def retired_hashes(self) -> list[str]:
        return list(self._retired)

    def install(self, script: LoadedScript) -> bool:
        """Make ``script`` active; the old one is retired. False when it is the same."""
        old = self._active
        if script.hash == old.hash:
            # Same source: keep the running module (no swap needed).
            return False
        now = self._clock()
        self._retired.pop(script.hash, None)
        self._retired[old.hash] = (old, now)
        self._active = script
        self.prune(now)
        return True

    def prune(self, now: float | None = None) -> None:
        t = self._clock() if now is None else now
        for digest, (script, since) in list(self._retired.items()):
            if t - since > self._retention:
                del self._retired[digest]
                if script.hash != self._active.hash:
                    script.discard()

    async def reload(self, spec: str | None, load_timeout: float) -> ReloadResult:
        """Load ``spec`` (default: the active script's) and install it if it checks out."""
        async with self._lock:
            target = spec or self._active.spec
            try:
                script = await load_script_checked(target, load_timeout, self._clock())
            except ScriptLoadError as exc:
                self.prune()
                return ReloadResult(False, self.info(), str(exc))
            changed = self.install(script)
            return ReloadResult(True, self.info(), changed=changed)
