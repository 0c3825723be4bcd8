"""Loading a routing script and running one of its routes safely.

Loading: the script is named by a dotted module name (``sipmesh.router.default_script``,
``mycompany.routing``) or a path to a ``.py`` file. Its source is read and executed
into a fresh module object named after its hash, never through the import cache,
so a reload always runs the new source and the running version is untouched until
the new one is complete and checked (DESIGN.md principle 6).

Running: a route runs under the time budget (``asyncio.timeout``). An exception, or
a budget overrun, never escapes: the caller gets a fallback decision (500 for a
request or failure route) and the error is logged with the script's file and line,
at most once per line every few seconds so a broken script cannot flood the log.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import inspect
import logging
import sys
import time
import traceback
import types
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sipmesh.router.api import Ctx, DecisionError, ScriptExit

log = logging.getLogger("sipmesh.router")

DEFAULT_SCRIPT = "sipmesh.router.default_script"
ROUTE_FUNCTIONS = ("request_route", "branch_route", "reply_route", "failure_route")

RouteFunction = Callable[[Ctx], Awaitable[None] | None]


class ScriptLoadError(Exception):
    """The script cannot be used; the message says where and why."""


@dataclass(frozen=True)
class LoadedScript:
    spec: str
    path: str
    hash: str
    loaded_at: float
    module: types.ModuleType = field(repr=False)

    @property
    def request_route(self) -> RouteFunction:
        fn: RouteFunction = self.module.request_route
        return fn

    def handler(self, name: str) -> RouteFunction | None:
        """A route function by name (an armed handler or a default route)."""
        fn = getattr(self.module, name, None) if name and not name.startswith("_") else None
        return fn if callable(fn) else None

    def discard(self) -> None:
        """Forget the module (it was registered for dataclasses/pickling of the script)."""
        if sys.modules.get(self.module.__name__) is self.module:
            del sys.modules[self.module.__name__]


def script_path(spec: str) -> Path:
    """The source file of a dotted module name or of a .py path."""
    if spec.endswith(".py") or "/" in spec or spec.startswith("."):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ScriptLoadError(f"routing script {spec!r}: no such file")
        return path.resolve()
    try:
        found = importlib.util.find_spec(spec)
    except (ImportError, ValueError) as exc:
        raise ScriptLoadError(f"routing script {spec!r}: {exc}") from None
    if found is None or not found.origin or not found.origin.endswith(".py"):
        raise ScriptLoadError(f"routing script {spec!r}: no such Python module")
    return Path(found.origin).resolve()


def _check(module: types.ModuleType, path: Path) -> None:
    for name in ROUTE_FUNCTIONS:
        fn = getattr(module, name, None)
        if fn is None:
            if name == "request_route":
                raise ScriptLoadError(f"{path}: no request_route(ctx) function")
            continue
        if not callable(fn):
            raise ScriptLoadError(f"{path}: {name} is not a function")
        try:
            inspect.signature(fn).bind(object())
        except TypeError:
            raise ScriptLoadError(f"{path}: {name} must take exactly one argument (ctx)") from None
        except ValueError:
            pass  # builtins without a signature: accept


def load_script(spec: str, now: float | None = None) -> LoadedScript:
    """Read, execute and check a script; raises ScriptLoadError (never anything else)."""
    path = script_path(spec)
    try:
        source = path.read_bytes()
    except OSError as exc:
        raise ScriptLoadError(f"routing script {path}: {exc.strerror}") from None
    digest = hashlib.sha256(source).hexdigest()
    name = f"_sipmesh_script_{digest[:16]}"
    try:
        code = compile(source, str(path), "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise ScriptLoadError(f"{path}:{exc.lineno}: syntax error: {exc.msg}") from None
    module = types.ModuleType(name)
    module.__file__ = str(path)
    previous = sys.modules.get(name)
    sys.modules[name] = module
    try:
        exec(code, module.__dict__)
        _check(module, path)
    except ScriptLoadError:
        _restore(name, previous)
        raise
    except BaseException as exc:  # SystemExit in a script must not stop the router
        _restore(name, previous)
        where = _script_line(exc, str(path))
        raise ScriptLoadError(f"{where}: {type(exc).__name__}: {exc}") from None
    return LoadedScript(spec, str(path), digest, time.time() if now is None else now, module)


def _restore(name: str, previous: types.ModuleType | None) -> None:
    if previous is None:
        sys.modules.pop(name, None)
    else:
        sys.modules[name] = previous


async def load_script_checked(
    spec: str, load_timeout: float, now: float | None = None
) -> LoadedScript:
    """load_script in a worker thread, so a script whose import hangs cannot stall us."""
    try:
        async with asyncio.timeout(load_timeout):
            return await asyncio.to_thread(load_script, spec, now)
    except TimeoutError:
        raise ScriptLoadError(
            f"routing script {spec!r}: import took longer than {load_timeout}s"
        ) from None


def _script_line(exc: BaseException, path: str) -> str:
    """``file:line`` of the innermost frame of the script in the exception's traceback."""
    chain: list[BaseException] = [exc]
    if exc.__context__ is not None:  # a timeout: the cancellation shows where it waited
        chain.append(exc.__context__)
    best = None
    for e in chain:
        frames = traceback.extract_tb(e.__traceback__)
        in_script = [f for f in frames if f.filename == path]
        if in_script:
            best = in_script[-1]
        elif best is None and frames:
            best = frames[-1]
    if best is None:
        return path
    return f"{best.filename}:{best.lineno}"


@dataclass
class RunResult:
    ok: bool
    error: str = ""  # "", "exception", "timeout"
    where: str = ""


class ErrorLog:
    """Logs script failures with their line, each line at most once per ``interval``."""

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}

    def error(self, key: str, message: str, *args: Any) -> None:
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            return
        if len(self._last) > 1000:
            self._last.clear()
        self._last[key] = now
        log.error(message, *args)


async def run_route(
    fn: RouteFunction, ctx: Ctx, script: LoadedScript, budget: float, errors: ErrorLog
) -> RunResult:
    """Run one route function within ``budget`` seconds; never raises an Exception."""
    try:
        async with asyncio.timeout(budget):
            result = fn(ctx)
            if inspect.isawaitable(result):
                await result
    except ScriptExit:
        pass
    except TimeoutError as exc:
        where = _script_line(exc, script.path)
        errors.error(
            f"timeout:{where}",
            "routing script %s exceeded its time budget of %.3fs (at %s) on %s",
            getattr(fn, "__name__", "?"),
            budget,
            where,
            ctx.method,
        )
        return RunResult(False, "timeout", where)
    except Exception as exc:
        where = _script_line(exc, script.path)
        kind = "decision" if isinstance(exc, DecisionError) else "exception"
        errors.error(
            f"{kind}:{where}",
            "routing script error at %s in %s: %s: %s",
            where,
            getattr(fn, "__name__", "?"),
            type(exc).__name__,
            exc,
        )
        return RunResult(False, "exception", where)
    return RunResult(True)
