"""The edge: transports, request checks, anti-flood, NAT, transactions."""

from pydantic import Field

from sipmesh.runtime.sections.base import Section


class EdgeConfig(Section):
    advertise: str = Field(
        "", description="address put in Via/Record-Route (public IP behind NAT); empty: listener's"
    )
    max_message_size: int = Field(65535, ge=1024, description="largest SIP message accepted")
    router_timeout: float = Field(
        2.0, gt=0, description="seconds to wait for a routing decision before 500/503"
    )
