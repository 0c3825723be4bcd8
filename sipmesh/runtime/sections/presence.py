"""The presence server and message store."""

from pydantic import Field

from sipmesh.runtime.sections.base import Section


class PresenceConfig(Section):
    max_expires: int = Field(3600, ge=1, description="longest subscription or publication")
