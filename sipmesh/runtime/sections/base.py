"""The base of every configuration section."""

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Strict about unknown keys (a typo in a YAML key is an error, not a silent default)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
