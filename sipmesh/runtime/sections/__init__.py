"""Configuration sections, one module per service, assembled by sipmesh.runtime.config.

Each service owns the section that describes it; the root model lives in
``sipmesh.runtime.config``. Sections are plain pydantic models with defaults, so an
empty configuration is a complete one (the embedded laptop setup).
"""

from sipmesh.runtime.sections.accounting import AccountingConfig
from sipmesh.runtime.sections.admin import AdminConfig
from sipmesh.runtime.sections.edge import EdgeConfig
from sipmesh.runtime.sections.media_relay import MediaRelayConfig
from sipmesh.runtime.sections.presence import PresenceConfig
from sipmesh.runtime.sections.registrar import RegistrarConfig
from sipmesh.runtime.sections.router import RouterConfig
from sipmesh.runtime.sections.telemetry import TelemetryConfig

__all__ = [
    "AccountingConfig",
    "AdminConfig",
    "EdgeConfig",
    "MediaRelayConfig",
    "PresenceConfig",
    "RegistrarConfig",
    "RouterConfig",
    "TelemetryConfig",
]
