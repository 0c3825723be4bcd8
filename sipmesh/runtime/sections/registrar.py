"""The registrar: digest authentication, location service (Kamailio's registrar,
usrloc, auth and auth_db modules; docs/registrar.md maps each setting to theirs)."""

from typing import Literal

from pydantic import Field, SecretStr

from sipmesh.runtime.sections.base import Section


class RegistrarConfig(Section):
    # -- registrar module ------------------------------------------------------
    default_expires: int = Field(3600, ge=0, description="expires when the UA gives none")
    min_expires: int = Field(60, ge=0, description="shorter requests get 423 Interval Too Brief")
    max_expires: int = Field(7200, ge=1, description="longer requests are cut down to this")
    max_contacts: int = Field(0, ge=0, description="bindings per AOR; 0 = unlimited")
    max_contacts_policy: Literal["reject", "replace-oldest"] = Field(
        "reject", description="beyond max_contacts: 403 (reject) or drop the oldest bindings"
    )
    method_filtering: bool = Field(
        False, description="lookup skips contacts whose Allow lacks the request's method"
    )
    path_mode: Literal["off", "lazy", "strict"] = Field(
        "lazy",
        description="Path (RFC 3327): off = not stored; lazy = stored, echoed when the UA "
        "supports path; strict = 420 when the UA does not",
    )
    outbound_mode: Literal["off", "supported", "required"] = Field(
        "supported", description="RFC 5626 outbound: off, supported, or required of every UA"
    )
    use_domain: bool = Field(
        True, description="AORs are user@domain (multi-domain); off: the user part alone"
    )
    # -- auth / auth_db ----------------------------------------------------------
    auth_register: bool = Field(True, description="REGISTER must pass digest authentication")
    realm: str = Field("", description="digest realm; empty: the domain of the AOR")
    algorithms: list[Literal["SHA-256", "MD5", "SHA-512-256"]] = Field(
        ["SHA-256", "MD5"], description="digest algorithms offered, in preference order"
    )
    nonce_expire: int = Field(300, ge=5, description="seconds a nonce is valid (stale after)")
    nonce_secret: SecretStr = Field(
        SecretStr(""),
        description="secret signing nonces, shared by every instance; empty: one is "
        "generated and shared through the key/value store",
    )
    calculate_ha1: bool = Field(
        False, description="verify against the plaintext password column instead of ha1"
    )
    store_password: bool = Field(
        False, description="`sipmesh ctl add/passwd` also store the plaintext password"
    )
    wrong_credentials_reply: Literal["challenge", "forbidden"] = Field(
        "challenge", description="a wrong password gets a new 401/407 (challenge) or 403"
    )
    lockout_source_failures: int = Field(
        10, ge=0, description="failed authentications from one source that ban it; 0 = never"
    )
    lockout_user_failures: int = Field(
        20, ge=0, description="failed authentications for one user that lock it; 0 = never"
    )
    lockout_window: int = Field(600, ge=1, description="seconds over which failures are counted")
    lockout_time: int = Field(900, ge=1, description="seconds a lockout (and the ban) lasts")
    # -- usrloc module -----------------------------------------------------------
    db_mode: Literal["none", "write-through", "write-back"] = Field(
        "write-back", description="location persistence to the location table"
    )
    timer_interval: float = Field(
        60.0, gt=0, description="seconds between expiry sweeps and write-back flushes"
    )
