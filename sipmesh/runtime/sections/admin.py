"""The admin service: gRPC/REST API and web console."""

from pydantic import Field, SecretStr

from sipmesh.runtime.sections.base import Section


class AdminConfig(Section):
    read_token: SecretStr = Field(SecretStr(""), description="bearer token for read-only access")
    write_token: SecretStr = Field(SecretStr(""), description="bearer token for read-write access")
