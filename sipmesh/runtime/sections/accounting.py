"""Accounting: acc, missed calls, CDRs."""

from pydantic import Field

from sipmesh.runtime.sections.base import Section


class AccountingConfig(Section):
    dialog_timeout: int = Field(
        43200, ge=60, description="seconds after which a call with no BYE is closed"
    )
