"""SQLite Database (the embedded default): one file, WAL journal, one worker thread.

Two connections serve the process:

- writes and transactions go to a connection used only by a worker thread of its
  own, one job per statement: a write may wait up to the busy timeout for another
  process (``sipmesh ctl``) holding the file's write lock, and the event loop must
  not wait with it. A lock keeps a transaction's statements together (no other
  coroutine's statement can land inside it);
- reads outside a transaction run on the event loop, on a second connection. In WAL
  mode a reader never waits for a writer (it reads the last committed state), and an
  indexed lookup takes ~6 µs of CPU, against ~33 µs for the hand-over to a thread and
  back (105 µs with aiosqlite, which took one hand-over each for execute, fetchall
  and close) — and under load the hand-over also costs GIL switches between the two
  threads. This is the subscriber query of every authenticated request. A large
  read (an unfiltered listing) blocks the loop while it runs: the embedded backend
  is for one host; use PostgreSQL where tables are big. ``:memory:`` databases have
  no second connection (it would be another database): everything goes to the
  worker there.

Callers write PostgreSQL placeholders ($1, $2 ...); they are rewritten to SQLite's
numbered ``?1, ?2`` outside string literals, identifiers and comments. Datetime
parameters are stored as ISO text ("YYYY-MM-DD HH:MM:SS[.ffffff]", UTC) in DATETIME
columns and read back as naive datetimes.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

from sipmesh.state.db import Dialect, Executor, Row
from sipmesh.state.errors import BadStateURL, ConstraintViolation, StateUnavailable

T = TypeVar("T")

# Seconds a read on the event loop may wait for a lock (see the module docstring).
READER_BUSY_TIMEOUT = 0.25


def sqlite_path(url: str) -> str:
    """The file of ``sqlite:///relative``, ``sqlite:////absolute`` or ``sqlite://:memory:``."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        raise BadStateURL(f"not a sqlite URL: {url!r}")
    if parts.netloc == ":memory:" or parts.path in ("/:memory:", ":memory:"):
        return ":memory:"
    if parts.netloc:
        raise BadStateURL(f"sqlite URL with a host: {url!r} (use sqlite:///path)")
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path:
        raise BadStateURL(f"sqlite URL without a path: {url!r}")
    return path


def translate_placeholders(sql: str) -> str:
    """Rewrite $N to ?N outside quotes and comments."""
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'\"":
            end = i + 1
            while end < n:
                if sql[end] == ch:
                    if end + 1 < n and sql[end + 1] == ch:  # doubled quote inside
                        end += 2
                        continue
                    break
                end += 1
            out.append(sql[i : end + 1])
            i = end + 1
        elif ch == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end < 0 else end
            out.append(sql[i:end])
            i = end
        elif ch == "$" and i + 1 < n and sql[i + 1].isdigit():
            j = i + 1
            while j < n and sql[j].isdigit():
                j += 1
            out.append("?" + sql[i + 1 : j])
            i = j
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _adapt(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat(sep=" ")
    if isinstance(value, bool):
        return int(value)
    return value


def _params(args: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(_adapt(a) for a in args)


def _convert_datetime(raw: bytes) -> datetime:
    return datetime.fromisoformat(raw.decode())


def _connect(path: str, busy_timeout: float) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path,
        isolation_level=None,  # we issue BEGIN/COMMIT ourselves
        detect_types=sqlite3.PARSE_DECLTYPES,
        timeout=busy_timeout,
        # The writer is created in the worker thread and used only there; the reader
        # only on the event loop's thread.
        check_same_thread=False,
    )
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
    except sqlite3.Error:
        conn.close()
        raise
    return conn


def _rows(conn: sqlite3.Connection, statement: str, params: tuple[Any, ...]) -> list[Row]:
    cursor = conn.execute(statement, params)
    try:
        names = [d[0] for d in cursor.description or ()]
        return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    finally:
        cursor.close()  # ends the statement's read snapshot (autocommit)


class _SQLiteExecutor:
    """Runs statements on the connection; the caller holds the lock."""

    dialect: Dialect = "sqlite"

    def __init__(self, owner: SQLiteDatabase, locking: bool) -> None:
        self._db = owner
        # The database takes the lock per statement; a transaction already holds it.
        self._locking = locking

    async def execute(self, sql: str, *args: Any) -> int:
        statement, params = self._db._sql(sql), _params(args)

        def op(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(statement, params)
            count = cursor.rowcount
            cursor.close()
            return max(count, 0)

        return await self._db._run(op, self._locking)

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None:
        statement, rows = self._db._sql(sql), [_params(a) for a in args]

        def op(conn: sqlite3.Connection) -> None:
            conn.executemany(statement, rows).close()

        await self._db._run(op, self._locking)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        statement, params = self._db._sql(sql), _params(args)
        if self._locking and self._db._reader is not None:
            return self._db._read(statement, params)

        def op(conn: sqlite3.Connection) -> list[Row]:
            return _rows(conn, statement, params)

        return await self._db._run(op, self._locking)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return None if row is None else next(iter(row.values()), None)


class SQLiteDatabase(_SQLiteExecutor):
    """A Database on one SQLite file."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        worker: ThreadPoolExecutor,
        path: str,
        op_timeout: float,
        reader: sqlite3.Connection | None = None,
    ) -> None:
        super().__init__(self, locking=True)
        self._conn = conn
        self._worker = worker
        self._reader = reader
        self.path = path
        self._op_timeout = op_timeout
        self._lock = asyncio.Lock()
        self._tx_task: asyncio.Task[Any] | None = None
        self._healthy = True
        self._closed = False
        self._sql_cache: dict[str, str] = {}

    @classmethod
    async def open(cls, path: str, *, op_timeout: float = 5.0) -> SQLiteDatabase:
        # The DATETIME converter is registered under a name Python itself does not use
        # (its own "timestamp"/"date" converters are deprecated since 3.12).
        sqlite3.register_converter("DATETIME", _convert_datetime)
        worker = ThreadPoolExecutor(1, thread_name_prefix="sipmesh-sqlite")

        try:
            conn = await asyncio.get_running_loop().run_in_executor(
                worker, _connect, path, op_timeout
            )
        except sqlite3.Error as exc:
            worker.shutdown(wait=False)
            raise StateUnavailable(f"cannot open sqlite database {path!r}: {exc}") from exc
        reader = None
        if path != ":memory:":
            try:
                # WAL readers do not wait for writers; the short busy timeout only
                # bounds the rare wait for a WAL-index rebuild (on the event loop).
                reader = _connect(path, min(op_timeout, READER_BUSY_TIMEOUT))
            except sqlite3.Error as exc:
                await asyncio.get_running_loop().run_in_executor(worker, conn.close)
                worker.shutdown(wait=False)
                raise StateUnavailable(f"cannot open sqlite database {path!r}: {exc}") from exc
        return cls(conn, worker, path, op_timeout, reader)

    @property
    def healthy(self) -> bool:
        return self._healthy

    def _sql(self, sql: str) -> str:
        cached = self._sql_cache.get(sql)
        if cached is None:
            cached = translate_placeholders(sql)
            if len(self._sql_cache) < 4096:
                self._sql_cache[sql] = cached
        return cached

    async def _run(self, op: Callable[[sqlite3.Connection], T], lock: bool) -> T:
        if lock:
            if self._tx_task is not None and self._tx_task is asyncio.current_task():
                raise RuntimeError("inside db.transaction(): run statements on its executor")
            try:
                async with asyncio.timeout(self._op_timeout):
                    await self._lock.acquire()
            except TimeoutError as exc:
                raise StateUnavailable(f"sqlite {self.path!r}: busy (lock wait)") from exc
        try:
            if self._closed:
                raise ValueError("database closed")
            async with asyncio.timeout(self._op_timeout):
                result = await asyncio.get_running_loop().run_in_executor(
                    self._worker, op, self._conn
                )
        except sqlite3.IntegrityError as exc:
            raise ConstraintViolation(str(exc)) from exc
        except sqlite3.OperationalError as exc:
            if not _unavailable(exc):
                raise
            self._healthy = False
            raise StateUnavailable(f"sqlite {self.path!r}: {exc}") from exc
        except (TimeoutError, ValueError) as exc:  # ValueError: closed
            self._healthy = False
            raise StateUnavailable(f"sqlite {self.path!r}: {exc or 'timeout'}") from exc
        finally:
            if lock:
                self._lock.release()
        self._healthy = True
        return result

    def _read(self, statement: str, params: tuple[Any, ...]) -> list[Row]:
        """A read outside any transaction, on the event loop (see the module docstring)."""
        if self._tx_task is not None and self._tx_task is asyncio.current_task():
            raise RuntimeError("inside db.transaction(): run statements on its executor")
        if self._closed or self._reader is None:
            self._healthy = False
            raise StateUnavailable(f"sqlite {self.path!r}: database closed")
        try:
            rows = _rows(self._reader, statement, params)
        except sqlite3.OperationalError as exc:
            if not _unavailable(exc):
                raise
            self._healthy = False
            raise StateUnavailable(f"sqlite {self.path!r}: {exc}") from exc
        self._healthy = True
        return rows

    async def ping(self) -> None:
        await self.fetchval("SELECT 1")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._reader is not None:
            self._reader.close()
        await asyncio.get_running_loop().run_in_executor(self._worker, self._conn.close)
        self._worker.shutdown(wait=True)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on an exception), under the lock."""
        if self._tx_task is not None and self._tx_task is asyncio.current_task():
            raise RuntimeError("nested transaction")
        try:
            async with asyncio.timeout(self._op_timeout):
                await self._lock.acquire()
        except TimeoutError as exc:
            raise StateUnavailable(f"sqlite {self.path!r}: busy (lock wait)") from exc
        tx = _SQLiteTx(self, locking=False)
        self._tx_task = asyncio.current_task()
        try:
            await tx._raw("BEGIN IMMEDIATE")
            try:
                yield tx
            except BaseException:
                await tx._raw("ROLLBACK")
                raise
            await tx._raw("COMMIT")
        finally:
            self._tx_task = None
            self._lock.release()


def _unavailable(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return any(s in text for s in ("locked", "busy", "unable to open", "disk i/o", "readonly"))


class _SQLiteTx(_SQLiteExecutor):
    """The executor a transaction yields: runs inside the held lock."""

    async def _raw(self, sql: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(sql).close()

        await self._db._run(op, lock=False)
