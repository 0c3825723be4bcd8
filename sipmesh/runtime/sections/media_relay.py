"""The media relay."""

from pydantic import Field

from sipmesh.runtime.sections.base import Section


class MediaRelayConfig(Section):
    port_min: int = Field(30000, ge=1024, le=65535, description="first RTP port")
    port_max: int = Field(40000, ge=1024, le=65535, description="last RTP port")
