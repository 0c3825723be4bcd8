"""RFC 4475 §3: every SIP torture test message, with the RFC's verdict.

Each message is stored byte-exact under tests/sip/torture/rfc4475/. Messages that
the RFC calls well formed must parse with the right values; invalid ones must
raise ParseError with the status the RFC names (and, for requests, a ``partial``
request from which that answer can be built). For messages whose problem the RFC
leaves to a later layer (registrar, proxy, UAS), the test checks that the parser
accepts them and exposes the values that layer needs, and says which answer that
layer gives.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sipmesh.sip import (
    AbsoluteURI,
    ParseError,
    Request,
    Response,
    SipURI,
    TelURI,
    parse_auth_params,
    parse_message,
)

DATA = Path(__file__).parent / "torture" / "rfc4475"

ALL = sorted(p.stem for p in DATA.glob("*.dat"))


def raw(name: str) -> bytes:
    return (DATA / f"{name}.dat").read_bytes()


def request(name: str) -> Request:
    msg = parse_message(raw(name))
    assert isinstance(msg, Request)
    return msg


def response(name: str) -> Response:
    msg = parse_message(raw(name))
    assert isinstance(msg, Response)
    return msg


def rejected(name: str, status: int) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse_message(raw(name))
    assert info.value.status_hint == status
    return info.value


def sip(uri: object) -> SipURI:
    assert isinstance(uri, SipURI)
    return uri


def test_every_message_of_section_3_is_present() -> None:
    # 13 valid (3.1.1), 19 invalid (3.1.2), 1 transaction layer (3.2),
    # 15 application layer (3.3), 1 backward compatibility (3.4).
    assert len(ALL) == 49


@pytest.mark.parametrize("name", ALL)
def test_unmodified_messages_that_parse_serialise_byte_identical(name: str) -> None:
    try:
        msg = parse_message(raw(name))
    except ParseError:
        return  # the rejected ones are checked one by one below
    data = raw(name)
    out = bytes(msg)
    if name == "dblreq":
        # RFC 3261 §18.3: the octets after Content-Length are not part of the message.
        assert data.startswith(out)
    else:
        assert out == data


# -- 3.1.1 Valid messages ------------------------------------------------------------


def test_3_1_1_1_wsinv_short_tortuous_invite() -> None:
    msg = request("wsinv")
    assert msg.method == "INVITE"
    ruri = sip(msg.ruri)
    assert (ruri.user, ruri.host, ruri.params) == (
        "vivekg",
        "chair-dnrc.example.com",
        {"unknownparam": None},
    )
    # Folded, oddly spaced To with an addr-spec and a spaced tag parameter.
    assert sip(msg.to.uri).user == "vivekg"
    assert msg.to.tag == "1918181833n"
    # Escaped quote and backslash inside the quoted display name (quoted-pair).
    assert msg.from_.display_name == 'J Rosenberg \\"'
    assert msg.from_.tag == "98asjd8"
    assert msg.max_forwards == 68  # leading zeros
    assert msg.call_id == "wsinv.ndaksdj@192.0.2.1"
    assert msg.content_length == 150
    assert (msg.cseq.seq, msg.cseq.method) == (9, "INVITE")  # folded CSeq
    assert msg.get("Subject") == ""  # "s :" is an empty subject
    assert msg.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert msg.get("unknownheaderwithunusualvalue") == ";;,,;;,;"
    assert [r.uri.params for r in msg.routes] == [  # type: ignore[union-attr]
        {"lr": None, "unknownwith": "value", "unknown-no-value": None}
    ]
    vias = msg.vias
    assert [(v.transport, v.host, v.branch) for v in vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert all(v.protocol == "SIP/2.0" for v in vias)
    (contact,) = msg.contacts
    assert contact.display_name == 'Quoted string ""'
    assert sip(contact.uri).user == "jdrosen"
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert contact.q == 0.33
    assert msg.content_type == "application/sdp"
    assert msg.body.startswith(b"v=0\r\n")
    assert len(msg.body) == 150


def test_3_1_1_2_intmeth_wide_range_of_valid_characters() -> None:
    msg = request("intmeth")
    method = "!interesting-Method0123456789_*+`.%indeed'~"
    assert msg.method == method  # % is not an escape in a method
    assert msg.cseq.method == method
    assert msg.cseq.seq == 139122385
    ruri = sip(msg.ruri)
    assert ruri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert ruri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert ruri.host == "example.com"
    assert msg.top_via is not None
    assert msg.top_via.branch == "z9hG4bK-.!%66*_+`'~"
    # quoted-pairs expand to a BEL, a NUL and a DEL character.
    assert msg.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert sip(msg.to.uri).user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert msg.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert msg.from_.tag == "_token~1'+`*%!-."
    assert msg.from_.params["fromparam''~+*_!.-%"] == '"работающий"'
    assert msg.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert msg.max_forwards == 255
    assert msg.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"
    assert msg.body == b""


def test_3_1_1_3_esc01_valid_use_of_escaping() -> None:
    msg = request("esc01")
    assert sip(msg.ruri).user == "sips:user@example.com"
    assert sip(msg.to.uri).user == "user"  # %75se%72
    assert sip(msg.from_.uri).user == "I have spaces"
    assert msg.call_id == "esc01.239409asdfakjkn23onasd0-3234"  # compact "i"
    assert msg.content_type == "application/sdp"  # compact "C"
    (contact,) = msg.contacts
    uri = sip(contact.uri)
    assert uri.user == "caller"
    # %6C%72 is "lr"; the value "v%61lue%25%34%31" unescapes once, to "value%41".
    assert uri.params == {"lr": None, "name": "value%41"}
    assert uri == SipURI("host5.example.net", "caller", params={"lr": None, "name": "value%41"})
    assert uri != SipURI("host5.example.net", "caller", params={"lr": None, "name": "valueA"})


def test_3_1_1_4_escnull_escaped_nulls_in_uris() -> None:
    msg = request("escnull")
    assert sip(msg.to.uri).user == "null-\x00-null"
    assert sip(msg.from_.uri).user == "null-\x00-null"
    # Two distinct contacts: the NUL must not shorten the user part.
    users = [sip(c.uri).user for c in msg.contacts]
    assert users == ["\x00", "\x00\x00"]
    assert str(msg.contacts[1].uri) == "sip:%00%00@host5.example.com"
    assert msg.content_length == 0  # "L:0"


def test_3_1_1_5_esc02_percent_is_not_an_escape_in_most_places() -> None:
    msg = request("esc02")
    assert msg.method == "RE%47IST%45R"  # not REGISTER
    assert msg.method != "REGISTER"
    assert msg.to.display_name == "%Z%45"
    assert msg.from_.display_name == "%Z%45"
    assert msg.top_via is not None
    assert msg.top_via.branch == "z9hG4bK209%fzsnel234"
    # Two Contact values, not three: "C%6Fntact" is another header.
    assert [sip(c.uri).user for c in msg.contacts] == ["alias1", "alias3"]
    assert msg.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_3_1_1_6_lwsdisp_no_lws_between_display_name_and_angle() -> None:
    msg = request("lwsdisp")
    assert msg.from_.display_name == "caller"
    assert msg.from_.tag == "323"
    assert sip(msg.from_.uri).user == "caller"


def test_3_1_1_7_longreq_long_values() -> None:
    msg = request("longreq")
    assert msg.to.display_name == f"I have a user name of {'extreme' * 10} proportion"
    to_uri = sip(msg.to.uri)
    assert to_uri.port == 6000
    assert to_uri.params[f"longparam{'name' * 25}"] == "shortvalue"
    assert f"very{'long' * 25}parameternamewithnovalue" in to_uri.params
    assert msg.from_.tag == "12" + "982" * 50 + "424"
    assert sip(msg.from_.uri).user == "amazinglylongcallername" * 5
    assert msg.call_id == f"longreq.one{'really' * 20}longcallid"
    assert msg.get(f"Unknown-{'Long' * 20}-Name") == (
        f"unknown-{'long' * 20}-value; unknown-{'long' * 20}-parameter-name = "
        f"unknown-{'long' * 20}-parameter-value"
    )
    vias = msg.vias
    assert len(vias) == 34  # every spelling of Via and v
    assert [v.host for v in vias[:33]] == [f"sip{i}.example.com" for i in range(33, 0, -1)]
    assert vias[33].received == "192.0.2.5"
    assert vias[33].branch == f"very{'long' * 50}branchvalue"
    assert msg.content_length == 150
    assert len(msg.body) == 150


def test_3_1_1_8_dblreq_extra_octets_after_body_are_ignored() -> None:
    data = raw("dblreq")
    msg = request("dblreq")
    assert msg.method == "REGISTER"
    assert msg.body == b""
    assert msg.call_id == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"
    # The trailing octets look like an INVITE but are noise on UDP (RFC 3261 §18.3);
    # parsed on their own they are a separate request.
    rest = data[len(bytes(msg)) :]
    second = parse_message(rest)
    assert isinstance(second, Request)
    assert second.method == "INVITE"
    assert second.call_id == "dblreq.0ha0isnda977644900765@192.0.2.15"


def test_3_1_1_9_semiuri_semicolon_in_user_part() -> None:
    msg = request("semiuri")
    ruri = sip(msg.ruri)
    assert ruri.user == "user;par=u@example.net"
    assert ruri.host == "example.com"
    assert ruri.params == {}
    assert msg.get_all("Accept") == [
        "application/sdp",
        "application/pkcs7-mime",
        "multipart/mixed",
        "multipart/signed",
        "message/sip",
        "message/sipfrag",
    ]


def test_3_1_1_10_transports_via_transport_tokens() -> None:
    msg = request("transports")
    assert [v.transport for v in msg.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    assert msg.call_id == "transports.kijh4akdnaqjkwendsasfdj"


def test_3_1_1_11_mpart01_multipart_with_binary_part() -> None:
    # The binary part is a same-length stand-in for the RFC's hex (see README.md).
    msg = request("mpart01")
    assert msg.content_length == 553
    assert len(msg.body) == 553
    assert b"\x00" in msg.body
    assert b"\r\x00" in msg.body
    assert msg.body.endswith(b"--7a9cbec02ceef655--\r\n")
    assert msg.content_type == "multipart/mixed;boundary=7a9cbec02ceef655"
    assert msg.top_via is not None
    assert msg.top_via.rport == ""
    assert msg.top_via.port == 5070
    assert msg.get("Date") == "Sat, 15 Oct 2005 04:44:56 GMT"


def test_3_1_1_12_unreason_utf8_reason_phrase() -> None:
    msg = response("unreason")
    assert msg.status == 200
    assert msg.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    assert msg.to.tag == "2229"


def test_3_1_1_13_noreason_empty_reason_phrase() -> None:
    msg = response("noreason")
    assert msg.status == 100
    assert msg.reason == ""


# -- 3.1.2 Invalid messages ----------------------------------------------------------


def test_3_1_2_1_badinv01_extraneous_separators_400() -> None:
    err = rejected("badinv01", 400)
    assert err.partial is not None
    assert err.partial.call_id == "badinv01.0ha0isndaksdjasdf3234nas"


def test_3_1_2_2_clerr_content_length_larger_than_datagram_400() -> None:
    err = rejected("clerr", 400)
    assert err.partial is not None
    assert err.partial.cseq.method == "INVITE"


def test_3_1_2_3_ncl_negative_content_length_400() -> None:
    rejected("ncl", 400)


def test_3_1_2_4_scalar02_request_scalars_out_of_range_400() -> None:
    # The RFC: "respond with a 400 Bad Request due to the CSeq error".
    err = rejected("scalar02", 400)
    assert "CSeq" in err.reason
    assert err.partial is not None
    assert err.partial.call_id == "scalar02.23o0pd9vanlq3wnrlnewofjas9ui32"


def test_3_1_2_5_scalarlg_response_scalars_out_of_range_discarded() -> None:
    # A response cannot be answered: it is dropped (no partial request).
    err = rejected("scalarlg", 400)
    assert err.partial is None


def test_3_1_2_6_quotbal_unterminated_quote_400() -> None:
    err = rejected("quotbal", 400)
    assert err.partial is not None


def test_3_1_2_7_ltgtruri_request_uri_in_angle_brackets_400() -> None:
    rejected("ltgtruri", 400)


def test_3_1_2_8_lwsruri_lws_in_request_uri_400() -> None:
    err = rejected("lwsruri", 400)
    assert err.partial is not None  # the headers were readable: answer the 400
    assert err.partial.call_id == "lwsruri.asdfasdoeoi2323-asdfwrn23-asd834rk423"


def test_3_1_2_9_lwsstart_multiple_sp_in_request_line_400() -> None:
    err = rejected("lwsstart", 400)
    assert err.partial is not None
    assert err.partial.method == "INVITE"


def test_3_1_2_10_trws_trailing_sp_in_request_line_400() -> None:
    err = rejected("trws", 400)
    assert err.partial is not None
    assert err.partial.uri == "sip:remote-target@example.com"


def test_3_1_2_11_escruri_escaped_headers_in_request_uri_400() -> None:
    # The RFC allows rejecting with 400 or ignoring the headers; we reject
    # (RFC 3261 §19.1.1: headers are not allowed in a Request-URI).
    err = rejected("escruri", 400)
    assert err.partial is not None


def test_3_1_2_12_baddate_non_gmt_date_is_accepted() -> None:
    # The RFC: reject only if the Date matters to the element. The parser does
    # not interpret Date; the raw value is kept for whoever does.
    msg = request("baddate")
    assert msg.get("Date") == "Fri, 01 Jan 2010 16:00:00 EST"


def test_3_1_2_13_regbadct_uri_with_header_not_in_angle_brackets_400() -> None:
    # Contact is parsed lazily: the registrar reads it and answers 400.
    msg = request("regbadct")
    with pytest.raises(ParseError) as info:
        _ = msg.contacts
    assert info.value.status_hint == 400


def test_3_1_2_14_badaspec_spaces_inside_addr_spec_400() -> None:
    err = rejected("badaspec", 400)
    assert err.partial is not None


def test_3_1_2_15_baddn_non_token_display_name_400() -> None:
    rejected("baddn", 400)


def test_3_1_2_16_badvers_unknown_protocol_version_505() -> None:
    err = rejected("badvers", 505)
    assert err.partial is not None
    assert err.partial.call_id == "badvers.31417@c.example.com"


def test_3_1_2_17_mismatch01_cseq_method_mismatch_400() -> None:
    err = rejected("mismatch01", 400)
    assert err.partial is not None
    assert err.partial.method == "OPTIONS"


def test_3_1_2_18_mismatch02_unknown_method_and_cseq_mismatch_501() -> None:
    # The RFC prefers 501 Not Implemented (400 is also acceptable).
    rejected("mismatch02", 501)


def test_3_1_2_19_bigcode_overlarge_response_code_dropped() -> None:
    err = rejected("bigcode", 400)
    assert err.partial is None


# -- 3.2 Transaction layer semantics ---------------------------------------------------


def test_3_2_1_badbranch_magic_cookie_without_identifier_parses() -> None:
    # "A parser must not break": the transaction layer may answer 400 or fall back
    # to RFC 2543 matching; the parser exposes the bare cookie.
    msg = request("badbranch")
    assert msg.top_via is not None
    assert msg.top_via.branch == "z9hG4bK"


# -- 3.3 Application layer semantics ---------------------------------------------------


def test_3_3_1_insuf_missing_required_headers_400() -> None:
    err = rejected("insuf", 400)
    # Via and CSeq are there, so the 400 can still be sent back.
    assert err.partial is not None
    assert err.partial.cseq.seq == 193942
    assert "call-id" not in err.partial


def test_3_3_2_unkscm_unknown_request_uri_scheme_parses_for_416() -> None:
    # Syntax is valid; the element answers 416 Unsupported URI Scheme.
    msg = request("unkscm")
    assert isinstance(msg.ruri, AbsoluteURI)
    assert msg.ruri.scheme == "nobodyknowsthisscheme"
    assert msg.ruri.rest == "totallyopaquecontent"


def test_3_3_3_novelsc_known_but_atypical_scheme_parses_for_416() -> None:
    msg = request("novelsc")
    assert isinstance(msg.ruri, AbsoluteURI)
    assert str(msg.ruri) == "soap.beep://192.0.2.103:3002"


def test_3_3_4_unksm2_unknown_schemes_in_headers_parse() -> None:
    msg = request("unksm2")
    assert str(msg.to.uri) == "isbn:2983792873"
    assert str(msg.from_.uri) == "http://www.example.com"
    assert msg.from_.tag == "3234233"
    assert str(msg.contacts[0].uri) == "name:John_Smith"


def test_3_3_5_bext01_unknown_require_and_proxy_require_parse_for_420() -> None:
    # A UAS answers 420 Bad Extension listing the unsupported option tags.
    msg = request("bext01")
    assert msg.tokens("Require") == ["nothingsupportsthis", "nothingsupportsthiseither"]
    assert msg.get_all("Proxy-Require") == [
        "noProxiesSupportThis",
        "norDoAnyProxiesSupportThis",
    ]


def test_3_3_6_invut_unknown_content_type_parses_for_415() -> None:
    msg = request("invut")
    assert msg.content_type == "application/unknownformat"
    assert msg.body == b'<audio>\r\n <pcmu port="443"/>\r\n</audio>\r\n'


def test_3_3_7_regaut01_unknown_authorization_scheme_parses_for_401() -> None:
    msg = request("regaut01")
    auth = msg.get("Authorization")
    assert auth is not None
    assert parse_auth_params(auth) == ("NoOneKnowsThisScheme", {"opaque-data": "here"})


def test_3_3_8_multi01_multiple_values_in_single_value_fields_400() -> None:
    err = rejected("multi01", 400)
    assert err.partial is not None


def test_3_3_9_mcl01_multiple_content_length_values_400() -> None:
    rejected("mcl01", 400)


def test_3_3_10_bcast_response_with_broadcast_via_parses() -> None:
    # A proxy must not forward it to the broadcast address: that is the proxy's
    # job once it pops its own Via; the parser exposes the next hop.
    msg = response("bcast")
    assert [v.host for v in msg.vias] == ["192.0.2.198", "255.255.255.255"]


def test_3_3_11_zeromf_max_forwards_zero_parses_for_483() -> None:
    # A proxy answers 483 Too Many Hops (or answers an OPTIONS itself).
    msg = request("zeromf")
    assert msg.max_forwards == 0


def test_3_3_12_cparam01_addr_spec_params_belong_to_the_header() -> None:
    msg = request("cparam01")
    (contact,) = msg.contacts
    assert contact.params == {"unknownparam": None}
    assert sip(contact.uri).params == {}
    assert sip(contact.uri).user == "+19725552222"


def test_3_3_13_cparam02_name_addr_params_belong_to_the_uri() -> None:
    msg = request("cparam02")
    (contact,) = msg.contacts
    assert contact.params == {}
    assert sip(contact.uri).params == {"unknownparam": None}


def test_3_3_14_regescrt_escaped_header_in_contact_uri() -> None:
    # The registrar stores the URI with its escaped Route header.
    msg = request("regescrt")
    (contact,) = msg.contacts
    assert sip(contact.uri).headers == {"Route": "<sip:sip.example.com>"}
    assert str(contact.uri) == "sip:user@example.com?Route=%3Csip:sip.example.com%3E"


def test_3_3_15_sdp01_unacceptable_accept_parses_for_406() -> None:
    msg = request("sdp01")
    assert msg.get_all("Accept") == ["text/nobodyKnowsThis"]
    assert msg.content_type == "application/sdp"


# -- 3.4 Backward compatibility ------------------------------------------------------


def test_3_4_1_inv2543_rfc2543_style_invite_parses() -> None:
    msg = request("inv2543")
    assert msg.top_via is not None
    assert msg.top_via.branch is None  # RFC 2543 transaction matching applies
    assert msg.max_forwards is None
    assert msg.content_length is None
    assert msg.body.endswith(b"m=audio 49217 RTP/AVP 0\r\n")  # the rest of the datagram
    # In the addr-spec form the ";user=phone" belongs to the header (RFC 3261 §20.10);
    # in the From name-addr it belongs to the URI.
    assert msg.to.params == {"user": "phone"}
    assert sip(msg.to.uri).params == {}
    assert sip(msg.from_.uri).params == {"user": "phone"}
    assert not isinstance(msg.from_.uri, TelURI)
