"""RFC 3261 §17 transactions (with RFC 6026's Accepted state), sans-IO.

Drive :class:`TransactionLayer` with ``receive``/``send_request``/``send_response``
and ``handle_timer``; read ``next_event``, ``datagrams_to_send`` and ``get_timer``.
"""

from sipmesh.sip.transaction.common import (
    MAGIC_COOKIE,
    AckReceived,
    Address,
    CancelReceived,
    Event,
    MalformedMessage,
    RequestReceived,
    ResponseReceived,
    State,
    StrayResponse,
    TransactionError,
    TransactionTerminated,
    TransactionTimeout,
    TransportFailure,
    client_key,
    is_reliable,
    response_address,
    server_key,
)
from sipmesh.sip.transaction.layer import TransactionLayer
from sipmesh.sip.transaction.timers import TimerConfig

__all__ = [
    "MAGIC_COOKIE",
    "AckReceived",
    "Address",
    "CancelReceived",
    "Event",
    "MalformedMessage",
    "RequestReceived",
    "ResponseReceived",
    "State",
    "StrayResponse",
    "TimerConfig",
    "TransactionError",
    "TransactionLayer",
    "TransactionTerminated",
    "TransactionTimeout",
    "TransportFailure",
    "client_key",
    "is_reliable",
    "response_address",
    "server_key",
]
