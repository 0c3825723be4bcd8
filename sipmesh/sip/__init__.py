"""Sans-IO SIP core: messages, parser, URIs, digest, SDP, transactions."""
