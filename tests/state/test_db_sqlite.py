"""The SQLite backend's two connections: reads on the event loop, writes on a worker."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from sipmesh.state.db_sqlite import SQLiteDatabase


async def test_reads_do_not_queue_behind_a_write_waiting_for_another_process(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "t.sqlite")
    db = await SQLiteDatabase.open(path, op_timeout=5.0)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        await db.execute("CREATE TABLE t (v INTEGER)")
        await db.execute("INSERT INTO t VALUES (1)")
        # Another process (sipmesh ctl, an operator's sqlite3) holds the write lock:
        # our write waits for it in the worker thread, for up to the busy timeout.
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO t VALUES (2)")
        write = asyncio.create_task(db.execute("INSERT INTO t VALUES (3)"))
        await asyncio.sleep(0.1)
        assert not write.done()
        # Reads meanwhile are answered from the last committed state at once; with
        # one connection they waited behind the write (seconds, not the 1 s bound).
        async with asyncio.timeout(1.0):
            assert await db.fetchval("SELECT COUNT(*) FROM t") == 1
            assert await db.fetch("SELECT v FROM t") == [{"v": 1}]
        other.execute("COMMIT")
        async with asyncio.timeout(5.0):
            await write
        assert await db.fetchval("SELECT SUM(v) FROM t") == 6  # the new commits are seen
    finally:
        other.close()
        await db.close()


async def test_reads_run_on_the_event_loop_thread(tmp_path: Path) -> None:
    db = await SQLiteDatabase.open(str(tmp_path / "t.sqlite"))
    threads: list[str] = []
    try:
        await db.execute("CREATE TABLE t (v INTEGER)")
        await db.execute("INSERT INTO t VALUES (1)")
        # A function the read calls on its thread: SQLite runs it during the query.
        await db._run(lambda conn: conn.create_function("whereami", 0, _record(threads)), lock=True)
        assert db._reader is not None
        db._reader.create_function("whereami", 0, _record(threads))
        await db.fetchval("SELECT whereami()")
        await db.execute("SELECT whereami()")
        assert threads == [threading.main_thread().name, "sipmesh-sqlite_0"]
        async with db.transaction() as tx:
            # Inside a transaction reads see its own writes: they go to the writer.
            await tx.execute("INSERT INTO t VALUES (2)")
            assert await tx.fetchval("SELECT COUNT(*) FROM t") == 2
            assert await tx.fetchval("SELECT whereami()") == 0
        assert threads[-1] == "sipmesh-sqlite_0"
    finally:
        await db.close()


async def test_memory_database_reads_through_the_worker() -> None:
    # A second connection to ":memory:" would be another, empty database.
    db = await SQLiteDatabase.open(":memory:")
    try:
        assert db._reader is None
        await db.execute("CREATE TABLE t (v INTEGER)")
        await db.execute("INSERT INTO t VALUES (7)")
        assert await db.fetchval("SELECT v FROM t") == 7
    finally:
        await db.close()


def _record(threads: list[str]) -> Callable[[], int]:
    def whereami() -> int:
        threads.append(threading.current_thread().name)
        return 0

    return whereami
