"""The registrar: digest authentication, location service."""

from pydantic import Field

from sipmesh.runtime.sections.base import Section


class RegistrarConfig(Section):
    default_expires: int = Field(3600, ge=0, description="expires when the UA gives none")
    min_expires: int = Field(60, ge=0, description="shorter requests get 423 Interval Too Brief")
    max_expires: int = Field(7200, ge=1, description="longer requests are cut down to this")
