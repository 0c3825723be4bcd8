"""Optional extra outputs of committed records, like acc's other backends.

Kamailio's acc writes to syslog (acc log_flag) and other backends besides the
database; sipmesh offers a JSON-lines file and syslog. A sink receives a record only
after its database transaction committed, and only the first time (a redelivered
event writes nothing), so sinks carry no duplicates. They are at most once: a
process dying between the commit and the sink write loses that line, never the row.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import socket
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def record_line(kind: str, record: dict[str, Any]) -> str:
    """One record as a JSON object with its kind ("acc", "missed_calls", "cdr")."""
    return json.dumps({"type": kind, **record}, default=_json_default, sort_keys=True)


class Sink(Protocol):
    def write(self, kind: str, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class JsonLinesSink:
    """Appends one JSON object per record to a file (line-buffered, flushed per line)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8", buffering=1)

    def write(self, kind: str, record: dict[str, Any]) -> None:
        self._file.write(record_line(kind, record) + "\n")

    def close(self) -> None:
        self._file.close()


class SyslogSink:
    """Sends each record to syslog (acc's log_facility/log_level), as JSON text.

    ``address`` is a Unix socket path (default /dev/log) or HOST:PORT (UDP).
    """

    def __init__(self, address: str = "/dev/log", facility: str = "local0") -> None:
        target: str | tuple[str, int]
        if ":" in address and not address.startswith("/"):
            host, _, port = address.rpartition(":")
            target = (host.strip("[]"), int(port))
        else:
            target = address
        self._handler = logging.handlers.SysLogHandler(
            address=target,
            facility=logging.handlers.SysLogHandler.facility_names[facility],
            socktype=socket.SOCK_DGRAM,
        )
        self._handler.setFormatter(logging.Formatter("sipmesh-acc: %(message)s"))
        self._handler.ident = ""

    def write(self, kind: str, record: dict[str, Any]) -> None:
        entry = logging.LogRecord(
            "sipmesh.accounting", logging.INFO, "", 0, record_line(kind, record), None, None
        )
        self._handler.emit(entry)

    def close(self) -> None:
        self._handler.close()


def open_sinks(jsonl_path: str, syslog_address: str, syslog_facility: str) -> list[Sink]:
    """The sinks a configuration asks for (empty settings: none)."""
    sinks: list[Sink] = []
    if jsonl_path:
        sinks.append(JsonLinesSink(jsonl_path))
    if syslog_address:
        sinks.append(SyslogSink(syslog_address, syslog_facility))
    return sinks
