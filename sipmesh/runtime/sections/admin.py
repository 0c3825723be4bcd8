"""The admin service: gRPC/REST API and web console."""

from pathlib import Path

from pydantic import Field, SecretStr

from sipmesh.runtime.sections.base import Section


class AdminConfig(Section):
    read_token: SecretStr = Field(
        SecretStr(""),
        description="bearer token for read-only access; empty: reads need the write token",
    )
    write_token: SecretStr = Field(
        SecretStr(""),
        description=(
            "bearer token for read-write access; empty: a random one is generated at start "
            "and written to token_file (mode 0600), never logged"
        ),
    )
    token_file: str = Field(
        "",
        description="where a generated write token is written, and where sipmesh ctl reads "
        "it; empty: admin-token in the working directory",
    )
    fanout_timeout: float = Field(
        2.0, gt=0, le=60, description="seconds to wait for every instance in cluster-wide calls"
    )
    console: bool = Field(True, description="serve the web console under /console")

    def token_path(self) -> Path:
        """The token file (relative paths are to the working directory)."""
        return Path(self.token_file or "admin-token")
