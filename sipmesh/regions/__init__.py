"""Multi-region: registrations replicated between regions, and where a user lives.

- :mod:`sipmesh.regions.index`: the *remote index* in a region's own Redis,
  AOR → (home region, the home region's SIP address), expiring with the bindings.
- :mod:`sipmesh.regions.replicator`: local registration events out to the shared
  inter-region subject, the peers' events into the remote index.
- :mod:`sipmesh.regions.module`: the runtime module running the replicator.

The router's ``lookup("location")`` falls back to the index on a local miss and
relays to the home region (sipmesh.router.facets). docs/deployment.md, "Multi-region".
"""

from sipmesh.regions.index import RemoteHome, RemoteIndex, RemoteLookup

__all__ = ["RemoteHome", "RemoteIndex", "RemoteLookup"]
