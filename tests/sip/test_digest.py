"""Digest authentication: RFC test vectors, stateless nonces, replay tracking."""

from __future__ import annotations

import itertools

import pytest

from sipmesh.sip.digest import (
    AuthStatus,
    DigestChallenge,
    DigestCredentials,
    DigestError,
    MemoryNonceCountTracker,
    NonceFactory,
    NonceStatus,
    NonceUse,
    accept_nonce_count,
    build_credentials,
    check_authorization,
    compute_ha1,
    compute_response,
    ha1_for_kamailio,
    ha1b_for_kamailio,
    hash_hex,
    session_ha1,
    verify_credentials,
)

# RFC 2617 §3.5 example.
RFC2617 = {
    "username": "Mufasa",
    "realm": "testrealm@host.com",
    "password": "Circle Of Life",
    "nonce": "dcd98b7102dd2f0e8b11d0f600bfb0c093",
    "uri": "/dir/index.html",
    "cnonce": "0a4f113b",
    "nc": "00000001",
    "response": "6629fae49393a05397450978507c4ef1",
}

# RFC 7616 §3.9.1 examples (MD5 and SHA-256 with the same inputs).
RFC7616 = {
    "username": "Mufasa",
    "realm": "http-auth@example.org",
    "password": "Circle of Life",
    "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    "uri": "/dir/index.html",
    "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    "nc": "00000001",
    "opaque": "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS",
}
RFC7616_MD5 = "8ca523f5e9506fed4657c9700eebdbec"
RFC7616_SHA256 = "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"


def test_rfc2617_vector() -> None:
    ha1 = compute_ha1(None, RFC2617["username"], RFC2617["realm"], RFC2617["password"])
    got = compute_response(
        algorithm=None,
        ha1=ha1,
        nonce=RFC2617["nonce"],
        method="GET",
        uri=RFC2617["uri"],
        qop="auth",
        nc=RFC2617["nc"],
        cnonce=RFC2617["cnonce"],
    )
    assert got == RFC2617["response"]


@pytest.mark.parametrize(
    ("algorithm", "expected"), [("MD5", RFC7616_MD5), ("SHA-256", RFC7616_SHA256)]
)
def test_rfc7616_vectors(algorithm: str, expected: str) -> None:
    challenge = DigestChallenge(
        realm=RFC7616["realm"],
        nonce=RFC7616["nonce"],
        algorithm=algorithm,
        qop=("auth", "auth-int"),
        opaque=RFC7616["opaque"],
    )
    creds = build_credentials(
        challenge,
        username=RFC7616["username"],
        password=RFC7616["password"],
        method="GET",
        uri=RFC7616["uri"],
        cnonce=RFC7616["cnonce"],
    )
    assert creds.response == expected
    assert creds.qop == "auth"
    assert creds.nc == "00000001"
    assert creds.opaque == RFC7616["opaque"]
    assert verify_credentials(creds, "GET", password=RFC7616["password"])
    ha1 = compute_ha1(algorithm, RFC7616["username"], RFC7616["realm"], RFC7616["password"])
    assert verify_credentials(creds, "GET", ha1=ha1)
    assert not verify_credentials(creds, "GET", password="circle of life")
    assert not verify_credentials(creds, "POST", ha1=ha1)


def test_no_qop_rfc2069_mode() -> None:
    ha1 = compute_ha1("MD5", "u", "r", "p")
    ha2 = hash_hex("MD5", "REGISTER:sip:example.com")
    expected = hash_hex("MD5", f"{ha1}:abc:{ha2}")
    got = compute_response(
        algorithm="MD5", ha1=ha1, nonce="abc", method="REGISTER", uri="sip:example.com"
    )
    assert got == expected


@pytest.mark.parametrize("algorithm", ["MD5-sess", "SHA-256-sess", "SHA-512-256-sess"])
def test_sess_algorithms_use_session_ha1(algorithm: str) -> None:
    base = algorithm.removesuffix("-sess")
    ha1 = compute_ha1(base, "alice", "atlanta.com", "secret")
    sha1 = session_ha1(base, ha1, "n1", "c1")
    ha2 = hash_hex(base, "INVITE:sip:bob@biloxi.com")
    expected = hash_hex(base, f"{sha1}:n1:00000002:c1:auth:{ha2}")
    got = compute_response(
        algorithm=algorithm,
        ha1=ha1,
        nonce="n1",
        method="INVITE",
        uri="sip:bob@biloxi.com",
        qop="auth",
        nc="00000002",
        cnonce="c1",
    )
    assert got == expected
    with pytest.raises(DigestError):
        compute_response(algorithm=algorithm, ha1=ha1, nonce="n1", method="INVITE", uri="sip:x")


def test_auth_int_hashes_body() -> None:
    ha1 = compute_ha1("SHA-256", "alice", "r", "pw")
    body = b"v=0\r\n"
    ha2 = hash_hex("SHA-256", f"INVITE:sip:b@x:{hash_hex('SHA-256', body)}")
    expected = hash_hex("SHA-256", f"{ha1}:n:00000001:c:auth-int:{ha2}")
    kwargs = {"algorithm": "SHA-256", "ha1": ha1, "nonce": "n", "method": "INVITE"}
    got = compute_response(
        **kwargs,
        uri="sip:b@x",
        qop="auth-int",
        nc="00000001",
        cnonce="c",
        body=body,
    )
    assert got == expected
    challenge = DigestChallenge(realm="r", nonce="n", algorithm="SHA-256", qop=("auth-int",))
    creds = build_credentials(
        challenge, username="alice", password="pw", method="INVITE", uri="sip:b@x", body=body
    )
    assert creds.qop == "auth-int"
    assert verify_credentials(creds, "INVITE", password="pw", body=body)
    assert not verify_credentials(creds, "INVITE", password="pw", body=b"v=1\r\n")


def test_unknown_algorithm_and_qop() -> None:
    with pytest.raises(DigestError):
        hash_hex("SHA-1", "x")
    with pytest.raises(DigestError):
        compute_response(algorithm="MD5", ha1="a", nonce="n", method="M", uri="u", qop="x")
    creds = DigestCredentials("u", "r", "n", "sip:x", "00", algorithm="AKAv1-MD5")
    assert not verify_credentials(creds, "REGISTER", password="p")
    with pytest.raises(DigestError):
        verify_credentials(creds, "REGISTER")


def test_kamailio_ha1_columns() -> None:
    assert ha1_for_kamailio("alice", "example.com", "pw") == hash_hex("MD5", "alice:example.com:pw")
    assert ha1b_for_kamailio("alice", "example.com", "example.com", "pw") == hash_hex(
        "MD5", "alice@example.com:example.com:pw"
    )


def test_userhash_sha512_256_round_trip() -> None:
    challenge = DigestChallenge(
        realm="api@example.org", nonce="n", algorithm="SHA-512-256", qop=("auth",), userhash=True
    )
    creds = build_credentials(
        challenge, username="Jäsøn Doe", password="Secret, or not?", method="GET", uri="/doc"
    )
    assert creds.username == hash_hex("SHA-512-256", "Jäsøn Doe:api@example.org")
    assert creds.userhash
    assert verify_credentials(creds, "GET", password="Secret, or not?", username="Jäsøn Doe")


def test_challenge_params_round_trip() -> None:
    params = {
        "realm": "example.com",
        "nonce": "abc",
        "opaque": "o",
        "stale": "TRUE",
        "algorithm": "SHA-256",
        "qop": "auth, auth-int",
    }
    ch = DigestChallenge.from_params(params)
    assert ch.stale
    assert ch.qop == ("auth", "auth-int")
    out = ch.to_params()
    assert out["stale"] == "true"
    assert out["qop"] == "auth,auth-int"
    assert DigestChallenge.from_params(out) == ch
    with pytest.raises(DigestError):
        DigestChallenge.from_params({"realm": "x"})


def test_credentials_params_round_trip_and_nc() -> None:
    creds = DigestCredentials.from_params(
        {
            "username": "bob",
            "realm": "r",
            "nonce": "n",
            "uri": "sip:r",
            "response": "ff",
            "qop": "AUTH",
            "nc": "0000000a",
            "cnonce": "c",
        }
    )
    assert creds.qop == "auth"
    assert creds.nonce_count == 10
    assert DigestCredentials.from_params(creds.to_params()) == creds
    assert DigestCredentials("u", "r", "n", "x", "y", nc="zz").nonce_count is None
    with pytest.raises(DigestError):
        DigestCredentials.from_params({"username": "bob"})


def _counter_bytes() -> itertools.count[int]:
    return itertools.count()


def _factory(secret: bytes = b"s3cret", lifetime: float = 30.0) -> NonceFactory:
    counter = _counter_bytes()
    return NonceFactory(secret, lifetime, random_bytes=lambda n: next(counter).to_bytes(n, "big"))


def test_nonce_factory_valid_stale_invalid() -> None:
    f = _factory()
    nonce = f.issue(1000.0)
    assert f.issue(1000.0) != nonce  # salt differs
    assert f.check(nonce, 1000.0) is NonceStatus.VALID
    assert f.check(nonce, 1030.0) is NonceStatus.VALID
    assert f.check(nonce, 1030.5) is NonceStatus.STALE
    # another instance with the same secret verifies it without shared storage
    assert _factory().check(nonce, 1001.0) is NonceStatus.VALID
    assert _factory(secret=b"other").check(nonce, 1001.0) is NonceStatus.INVALID
    # issued far in the future: forged or a broken clock
    assert f.check(f.issue(2000.0), 1000.0) is NonceStatus.INVALID
    # tampering with any byte breaks the MAC
    tampered = ("A" if nonce[0] != "A" else "B") + nonce[1:]
    assert f.check(tampered, 1000.0) is NonceStatus.INVALID
    for junk in ["", "!!!", "dcd98b7102dd2f0e8b11d0f600bfb0c093", "é"]:
        assert f.check(junk, 1000.0) is NonceStatus.INVALID
    with pytest.raises(ValueError, match="secret"):
        NonceFactory(b"", 10)
    with pytest.raises(ValueError, match="lifetime"):
        NonceFactory(b"x", 0)


def test_accept_nonce_count() -> None:
    assert accept_nonce_count(None, 1)
    assert not accept_nonce_count(None, 0)
    assert accept_nonce_count(1, 2)
    assert not accept_nonce_count(2, 2)
    assert not accept_nonce_count(5, 3)


def test_memory_tracker_rejects_replays_and_expires() -> None:
    tracker = MemoryNonceCountTracker()
    assert tracker.record(NonceUse("n", 1, 50.0), 0.0)
    assert not tracker.record(NonceUse("n", 1, 50.0), 1.0)
    assert tracker.record(NonceUse("n", 3, 50.0), 1.0)
    assert not tracker.record(NonceUse("n", 2, 50.0), 1.0)
    assert tracker.record(NonceUse("m", 1, 50.0), 1.0)
    # after expiry the entry is gone (the nonce itself then verifies as stale)
    assert tracker.record(NonceUse("n", 1, 100.0), 60.0)


def test_check_authorization_full_flow() -> None:
    f = _factory()
    challenge = f.challenge("example.com", 100.0, algorithm="SHA-256", qop=("auth",))
    creds = build_credentials(
        challenge, username="alice", password="pw", method="REGISTER", uri="sip:example.com"
    )
    tracker = MemoryNonceCountTracker()
    ha1 = compute_ha1("SHA-256", "alice", "example.com", "pw")
    result = check_authorization(creds, "REGISTER", 101.0, f, realm="example.com", ha1=ha1)
    assert result.ok
    assert result.nonce_use == NonceUse(challenge.nonce, 1, 130.0)
    assert tracker.record(result.nonce_use, 101.0)
    # the same credentials again: still computes OK but the tracker catches the replay
    again = check_authorization(creds, "REGISTER", 102.0, f, realm="example.com", ha1=ha1)
    assert again.nonce_use is not None
    assert not tracker.record(again.nonce_use, 102.0)

    wrong = check_authorization(creds, "REGISTER", 101.0, f, realm="example.com", password="x")
    assert wrong.status is AuthStatus.BAD_RESPONSE
    stale = check_authorization(creds, "REGISTER", 200.0, f, realm="example.com", password="pw")
    assert stale.status is AuthStatus.STALE_NONCE
    assert not stale.ok
    other_realm = check_authorization(creds, "REGISTER", 101.0, f, realm="x.org", password="pw")
    assert other_realm.status is AuthStatus.REALM_MISMATCH
    forged = build_credentials(
        DigestChallenge(realm="example.com", nonce="made-up", qop=("auth",)),
        username="alice",
        password="pw",
        method="REGISTER",
        uri="sip:example.com",
    )
    res = check_authorization(forged, "REGISTER", 101.0, f, realm="example.com", password="pw")
    assert res.status is AuthStatus.INVALID_NONCE


def test_check_authorization_without_qop_and_bad_nc() -> None:
    f = _factory()
    challenge = f.challenge("r", 0.0, qop=())
    creds = build_credentials(challenge, username="u", password="p", method="BYE", uri="sip:r")
    assert creds.qop is None
    assert creds.nc is None
    assert creds.cnonce is None
    result = check_authorization(creds, "BYE", 1.0, f, realm="r", password="p")
    assert result.ok
    assert result.nonce_use is None
    with_qop = build_credentials(
        f.challenge("r", 0.0), username="u", password="p", method="BYE", uri="sip:r", nc=0
    )
    res = check_authorization(with_qop, "BYE", 1.0, f, realm="r", password="p")
    assert res.status is AuthStatus.BAD_NONCE_COUNT


def test_build_credentials_rejects_unoffered_qop() -> None:
    with pytest.raises(DigestError):
        build_credentials(
            DigestChallenge(realm="r", nonce="n", qop=("auth",)),
            username="u",
            password="p",
            method="M",
            uri="u",
            qop="auth-int",
        )


def test_challenge_header_parse_and_format() -> None:
    # RFC 7616 §3.9.1 challenge (one of the two WWW-Authenticate values)
    value = (
        'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, '
        'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
        'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )
    ch = DigestChallenge.parse(value)
    assert ch.realm == RFC7616["realm"]
    assert ch.nonce == RFC7616["nonce"]
    assert ch.algorithm == "SHA-256"
    assert ch.qop == ("auth", "auth-int")
    assert ch.opaque == RFC7616["opaque"]
    header = ch.to_header()
    assert header.startswith('Digest realm="http-auth@example.org", nonce="7ypf')
    assert 'qop="auth,auth-int"' in header
    assert "algorithm=SHA-256" in header
    assert DigestChallenge.parse(header) == ch
    stale = DigestChallenge(realm="r", nonce="n", stale=True, qop=("auth",))
    assert "stale=true" in stale.to_header()
    assert DigestChallenge.parse(stale.to_header()).stale


def test_credentials_header_rfc2617_example() -> None:
    # RFC 2617 §3.5 Authorization header, answered for the GET of the example
    value = (
        'Digest username="Mufasa", realm="testrealm@host.com", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", '
        'qop=auth, nc=00000001, cnonce="0a4f113b", '
        'response="6629fae49393a05397450978507c4ef1", '
        'opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    creds = DigestCredentials.parse(value)
    assert creds.username == "Mufasa"
    assert creds.qop == "auth"
    assert creds.nonce_count == 1
    assert verify_credentials(creds, "GET", password="Circle Of Life")
    assert not verify_credentials(creds, "GET", password="Circle of Life")
    header = creds.to_header()
    assert "qop=auth" in header
    assert "nc=00000001" in header
    assert 'response="6629fae49393a05397450978507c4ef1"' in header
    assert DigestCredentials.parse(header) == creds


def test_header_errors_are_digest_errors() -> None:
    with pytest.raises(DigestError, match="not a Digest"):
        DigestChallenge.parse('Basic realm="x"')
    with pytest.raises(DigestError, match="not a Digest"):
        DigestCredentials.parse('Bearer realm="x"')
    with pytest.raises(DigestError):
        DigestCredentials.parse('Digest username="a"')
    with pytest.raises(DigestError):
        DigestChallenge.parse('Digest realm="unterminated')
