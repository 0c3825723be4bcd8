"""The router: routing script and its feature switches."""

from pydantic import Field

from sipmesh.runtime.sections.base import Section


class RouterConfig(Section):
    script: str = Field(
        "", description="routing script: a module name or a .py path; empty: the default script"
    )
    script_timeout: float = Field(1.0, gt=0, description="time budget of one routing decision")
