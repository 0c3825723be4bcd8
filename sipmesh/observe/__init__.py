"""Observability: Kamailio-named statistics, OpenTelemetry spans, HEP v3 capture.

- :mod:`sipmesh.observe.stats`: the naming layer (``sipmesh_<kamailio name>``) and
  the statistic ↔ Kamailio name table;
- :mod:`sipmesh.observe.spans`: span helpers (edge transaction, routing decision,
  service calls) that cost nothing when tracing is off;
- :mod:`sipmesh.observe.instrument`: store and bus wrappers (latency, spans, trace
  context in NATS headers);
- :mod:`sipmesh.observe.hep`, :mod:`~sipmesh.observe.hep_sender`,
  :mod:`~sipmesh.observe.capture`: siptrace's HEP v3 mirroring and sip_trace rows;
- :mod:`sipmesh.observe.wiring`: what service modules call in ``create(runtime)``.

See docs/observability.md.
"""
