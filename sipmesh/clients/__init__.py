"""Typed client interfaces between services (in-process and gRPC).

- interfaces.py: the Protocols (RouterClient, RegistrarClient, PresenceClient,
  MediaRelayClient, EdgeClient) over the generated messages of proto/sipmesh/v1;
  admin_api.py: AdminApi and GrpcAdminClient.
- grpc_clients.py: their gRPC implementations (split mode);
  grpc_servers.py: `add_*_servicer(server, service)` serving a service object.
- stream.py / backend.py: the batched bidirectional streams of the hot path;
  resolve.py: targets and load sharing; errors.py: the errors both modes raise;
  admin_auth.py: the admin API's tokens and which of its RPCs only read;
  tracing.py: trace context in metadata and per stream item.
"""

from sipmesh.clients.backend import StreamOptions, StreamState
from sipmesh.clients.errors import (
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    ServiceError,
    Unauthenticated,
    Unavailable,
)
from sipmesh.clients.interfaces import (
    EdgeClient,
    EdgeDirectory,
    MediaRelayClient,
    PresenceClient,
    RegistrarClient,
    RouterClient,
)

__all__ = [
    "AlreadyExists",
    "Cancelled",
    "DeadlineExceeded",
    "EdgeClient",
    "EdgeDirectory",
    "Internal",
    "InvalidArgument",
    "MediaRelayClient",
    "NotFound",
    "PermissionDenied",
    "PresenceClient",
    "RegistrarClient",
    "ResourceExhausted",
    "RouterClient",
    "ServiceError",
    "StreamOptions",
    "StreamState",
    "Unauthenticated",
    "Unavailable",
]
