"""Sans-IO SIP core: messages, parser, URIs, digest, SDP, transactions."""
# The SIP core is sans-IO (DESIGN.md principle 1): no event loop, no sockets, no
# threads. Transports in services/edge are the only code that touches the network.

from sipmesh.sip.errors import ParseError
from sipmesh.sip.fields import (
    Contact,
    CSeq,
    Via,
    format_auth_params,
    parse_auth_params,
)
from sipmesh.sip.headers import header_key, split_list
from sipmesh.sip.message import Message, Request, Response
from sipmesh.sip.parser import parse_message
from sipmesh.sip.uri import AbsoluteURI, NameAddr, SipURI, TelURI, parse_uri

__all__ = [
    "AbsoluteURI",
    "CSeq",
    "Contact",
    "Message",
    "NameAddr",
    "ParseError",
    "Request",
    "Response",
    "SipURI",
    "TelURI",
    "Via",
    "format_auth_params",
    "header_key",
    "parse_auth_params",
    "parse_message",
    "parse_uri",
    "split_list",
]
