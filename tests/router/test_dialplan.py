"""Dialplan: Kamailio's match operators and substitution forms, reload, ctx.dp."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sipmesh.router.dialplan import (
    MATCH_EQUAL,
    MATCH_FNMATCH,
    MATCH_REGEX,
    DialplanLoadError,
    build_dialplan,
)
from sipmesh.state.db import Database
from sipmesh.state.factory import open_db
from sipmesh.state.schema import migrate
from tests.router.lbhelpers import decide, invite, start_router, write_script


def row(
    dpid: int, pr: int, op: int, match: str, subst: str = "", repl: str = "", **kw: Any
) -> dict[str, Any]:
    return {
        "dpid": dpid,
        "pr": pr,
        "match_op": op,
        "match_exp": match,
        "match_len": kw.get("match_len", 0),
        "subst_exp": subst,
        "repl_exp": repl,
        "attrs": kw.get("attrs", ""),
    }


# E.164 normalisation for a German operator: national 0…, international 00…, local.
E164 = [
    row(1, 10, MATCH_REGEX, r"^00[1-9]", r"^00(.*)$", r"+\1", attrs="intl"),
    row(1, 20, MATCH_REGEX, r"^0[1-9]", r"^0(.*)$", r"+49\1", attrs="national"),
    row(1, 30, MATCH_REGEX, r"^[1-9][0-9]{4,8}$", r"^(.*)$", r"+4930\1", attrs="local"),
    row(1, 5, MATCH_EQUAL, "112", "", "+49112", attrs="emergency"),
]


def test_e164_normalisation() -> None:
    dp = build_dialplan(E164)
    assert dp.translate(1, "004930123456") == ("+4930123456", "intl")
    assert dp.translate(1, "030123456") == ("+4930123456", "national")
    assert dp.translate(1, "123456") == ("+4930123456", "local")
    assert dp.translate(1, "112") == ("+49112", "emergency")
    assert dp.translate(1, "+4930123456") is None  # no rule: untouched by the caller
    assert dp.translate(2, "030123456") is None  # unknown dpid


def test_equal_operator_is_whole_string_and_match_len() -> None:
    dp = build_dialplan(
        [
            row(1, 1, MATCH_EQUAL, "100", "", "sos"),
            row(1, 2, MATCH_REGEX, "^9", "^9", "", match_len=4),
        ]
    )
    assert dp.translate(1, "100") == ("sos", "")
    assert dp.translate(1, "1000") is None  # equal is not a prefix match
    assert dp.translate(1, "9123") == ("", "")  # repl empty: subst removes all (output = repl)
    assert dp.translate(1, "91234") is None  # match_len 4 only


def test_regex_operator_is_searched_not_anchored() -> None:
    dp = build_dialplan([row(1, 1, MATCH_REGEX, "555", "(.*)555(.*)", r"\1000\2")])
    assert dp.translate(1, "12555") == ("12000", "")
    assert dp.translate(1, "5551") == ("0001", "")
    assert dp.translate(1, "12345") is None


def test_fnmatch_operator() -> None:
    dp = build_dialplan(
        [
            row(7, 1, MATCH_FNMATCH, "08[0-9]?", "^08", "+498", attrs="svc"),
            row(7, 2, MATCH_FNMATCH, "*#", "^(.*)#$", r"\1"),
        ]
    )
    assert dp.translate(7, "0801") == ("+498", "svc")  # repl without backrefs: output is repl
    assert dp.translate(7, "08012") is None  # ? is exactly one character
    assert dp.translate(7, "1234#") == ("1234", "")
    assert dp.translate(7, "1234") is None


def test_backreferences_whole_match_and_groups() -> None:
    dp = build_dialplan([row(1, 1, MATCH_REGEX, "^[0-9]+$", r"^([0-9]{3})([0-9]+)$", r"<\0>\2-\1")])
    assert dp.translate(1, "1234567") == ("<1234567>4567-123", "")


def test_subst_that_does_not_match_fails_the_translation() -> None:
    # Kamailio stops at the first matching rule even if its subst_exp does not apply.
    dp = build_dialplan(
        [
            row(1, 1, MATCH_REGEX, "^1", "^2(.*)", r"\1"),
            row(1, 2, MATCH_REGEX, "^1", "^1(.*)", r"X\1"),
        ]
    )
    assert dp.translate(1, "123") is None


def test_priority_order_lower_pr_first() -> None:
    dp = build_dialplan(
        [row(1, 50, MATCH_REGEX, "^1", "", "late"), row(1, 10, MATCH_REGEX, "^12", "", "early")]
    )
    assert dp.translate(1, "123") == ("early", "")
    assert dp.translate(1, "13") == ("late", "")
    assert dp.match(1, "13") is not None
    assert dp.match(1, "2") is None


def test_empty_subst_and_repl_keep_the_input() -> None:
    dp = build_dialplan([row(3, 1, MATCH_FNMATCH, "*", "", "", attrs="any")])
    assert dp.translate(3, "alice") == ("alice", "any")


@pytest.mark.parametrize(
    "bad",
    [
        row(1, 1, MATCH_REGEX, "(", "", ""),
        row(1, 1, MATCH_EQUAL, "1", "(x", ""),
        row(1, 1, 9, "1", "", ""),
        row(1, 1, MATCH_EQUAL, "1", "^(1)$", r"\2"),
    ],
)
def test_bad_rules_are_refused_with_their_reason(bad: dict[str, Any]) -> None:
    with pytest.raises(DialplanLoadError, match="dialplan rule"):
        build_dialplan([bad])


@pytest.fixture
async def db(tmp_path: Path) -> Any:
    database = await open_db(f"sqlite:///{tmp_path / 'dp.sqlite'}")
    await migrate(database)
    yield database
    await database.close()


async def insert(db: Database, rows: list[dict[str, Any]]) -> None:
    for r in rows:
        await db.execute(
            "INSERT INTO dialplan (dpid, pr, match_op, match_exp, match_len, subst_exp, repl_exp, "
            "attrs) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            r["dpid"],
            r["pr"],
            r["match_op"],
            r["match_exp"],
            r["match_len"],
            r["subst_exp"],
            r["repl_exp"],
            r["attrs"],
        )


SCRIPT = """
def request_route(ctx):
    if ctx.dp.translate_ruser(1):
        ctx.append_hf("X-Dp-Attrs", ctx.vars["dp_attrs"])
    ctx.relay()
"""


async def test_script_translates_ruser_and_reload_is_atomic(db: Database, tmp_path: Path) -> None:
    await insert(db, E164)
    router = await start_router(db, write_script(tmp_path, SCRIPT))
    try:
        d = await decide(router, invite("sip:030123456@example.com"))
        assert d.ruri == "sip:+4930123456@example.com"
        assert [(e.name, e.value) for e in d.edits] == [("X-Dp-Attrs", "national")]
        # A bad row makes the reload fail: the running rules stay.
        await insert(db, [row(1, 1, MATCH_REGEX, "([", "", "")])
        result = await router.reload(what="dialplan")
        assert not result.ok
        assert "dialplan rule" in result.error
        d = await decide(router, invite("sip:0049301@example.com"))
        assert d.ruri == "sip:+49301@example.com"
        # Fixed table: the new rule set replaces the old one as a whole.
        await db.execute("DELETE FROM dialplan")
        await insert(db, [row(1, 1, MATCH_FNMATCH, "0*", "^0(.*)$", r"+44\1", attrs="uk")])
        assert (await router.reload(what="dialplan")).ok
        d = await decide(router, invite("sip:0207@example.com"))
        assert d.ruri == "sip:+44207@example.com"
    finally:
        await router.stop(0)
