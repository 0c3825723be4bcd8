"""The pure REGISTER core (RFC 3261 §10.3) on a fake clock: no store, no I/O."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest

from sipmesh.registrar.core import (
    RETRANSMISSION_WINDOW,
    ChangeKind,
    Outcome,
    Policy,
    RegisterPlan,
    Rejected,
    SourceFacts,
    apply_register,
    parse_register,
)
from sipmesh.registrar.replies import ok_response
from sipmesh.registrar.testing import contact_expires, make_register
from sipmesh.sip.message import Request
from sipmesh.state.location import Binding

AOR = "alice@example.com"
NOW = 1_700_000_000.0
FACTS = SourceFacts(
    remote_host="198.51.100.7",
    remote_port=40000,
    transport="udp",
    socket="udp:203.0.113.1:5060",
    edge_id="edge-1",
    flow_id="flow-9",
)


def ids() -> itertools.count[int]:
    return itertools.count(1)


def run(
    request: Request,
    current: Sequence[Binding] = (),
    policy: Policy | None = None,
    now: float = NOW,
    facts: SourceFacts = FACTS,
    fix_nated: bool = False,
) -> tuple[RegisterPlan, Outcome]:
    policy = policy or Policy()
    plan = parse_register(request, AOR, facts, policy, fix_nated=fix_nated)
    counter = ids()
    outcome = apply_register(plan, list(current), policy, now, new_id=lambda: f"r{next(counter)}")
    return plan, outcome


def test_add_binding_with_default_expires_and_facts() -> None:
    _, out = run(make_register(AOR, ["<sip:alice@192.0.2.10:5060>"]))
    (b,) = out.bindings
    assert b.contact == "sip:alice@192.0.2.10:5060"
    assert b.expires_at == NOW + 3600
    assert (b.edge_id, b.flow_id, b.socket, b.transport) == (
        "edge-1",
        "flow-9",
        "udp:203.0.113.1:5060",
        "udp",
    )
    assert b.received is None  # no NAT detected, no fix_nated
    assert [c.kind for c in out.changes] == [ChangeKind.ADDED]
    assert b.ruid == "r1"


def test_received_is_stored_when_nated() -> None:
    _, out = run(make_register(AOR, ["<sip:alice@10.0.0.5:5060>"]), fix_nated=True)
    assert out.bindings[0].received == "sip:198.51.100.7:40000;transport=udp"


@pytest.mark.parametrize(
    ("contact", "header", "expected"),
    [
        ("<sip:a@192.0.2.1>;expires=120", 600, 120),  # contact param wins
        ("<sip:a@192.0.2.1>", 600, 600),  # then the Expires header
        ("<sip:a@192.0.2.1>", None, 3600),  # then the default
        ("<sip:a@192.0.2.1>;expires=99999", None, 7200),  # cut to max_expires
    ],
)
def test_expires_precedence(contact: str, header: int | None, expected: int) -> None:
    _, out = run(make_register(AOR, [contact], expires=header))
    assert out.bindings[0].expires_at == NOW + expected


def test_too_brief_gets_423_with_min_expires() -> None:
    with pytest.raises(Rejected) as err:
        run(make_register(AOR, ["<sip:a@192.0.2.1>;expires=30"]))
    assert err.value.status == 423
    assert ("Min-Expires", "60") in err.value.headers


def test_refresh_keeps_ruid_and_reports_refreshed() -> None:
    _, first = run(make_register(AOR, ["<sip:a@192.0.2.1>"], cseq=1))
    _, second = run(
        make_register(AOR, ["<sip:a@192.0.2.1>"], cseq=2, expires=600),
        current=first.bindings,
        now=NOW + 100,
    )
    (b,) = second.bindings
    assert b.ruid == first.bindings[0].ruid
    assert b.expires_at == NOW + 100 + 600
    assert [c.kind for c in second.changes] == [ChangeKind.REFRESHED]


def test_contact_uri_comparison_is_rfc3261() -> None:
    # §19.1.4: host case-insensitive -> the same binding.
    _, first = run(make_register(AOR, ["<sip:a@HOST.example.org>"], cseq=1))
    _, second = run(
        make_register(AOR, ["<sip:a@host.example.org>"], cseq=2), current=first.bindings
    )
    assert len(second.bindings) == 1
    assert second.changes[0].kind is ChangeKind.REFRESHED


def test_expires_zero_removes_one_binding() -> None:
    _, first = run(make_register(AOR, ["<sip:a@192.0.2.1>", "<sip:b@192.0.2.2>"]))
    _, second = run(
        make_register(AOR, ["<sip:a@192.0.2.1>;expires=0"], cseq=2), current=first.bindings
    )
    assert [b.contact for b in second.bindings] == ["sip:b@192.0.2.2"]
    assert [(c.kind, c.binding.contact) for c in second.changes] == [
        (ChangeKind.REMOVED, "sip:a@192.0.2.1")
    ]


def test_star_with_expires_zero_removes_all() -> None:
    _, first = run(make_register(AOR, ["<sip:a@192.0.2.1>", "<sip:b@192.0.2.2>"]))
    _, second = run(make_register(AOR, ["*"], cseq=2, expires=0), current=first.bindings)
    assert second.bindings == []
    assert {c.kind for c in second.changes} == {ChangeKind.REMOVED}
    assert len(second.changes) == 2


@pytest.mark.parametrize(
    ("contacts", "expires"),
    [(["*"], None), (["*"], 3600), (["*", "<sip:a@192.0.2.1>"], 0)],
)
def test_star_needs_expires_zero_and_no_other_contact(
    contacts: list[str], expires: int | None
) -> None:
    with pytest.raises(Rejected) as err:
        run(make_register(AOR, contacts, expires=expires))
    assert err.value.status == 400


def test_same_call_id_lower_or_equal_cseq_aborts() -> None:
    _, first = run(make_register(AOR, ["<sip:a@192.0.2.1>"], cseq=5))
    later = NOW + RETRANSMISSION_WINDOW + 1
    for cseq, now in ((5, later), (4, NOW), (4, later)):
        with pytest.raises(Rejected) as err:
            run(
                make_register(AOR, ["<sip:a@192.0.2.1>"], cseq=cseq),
                current=first.bindings,
                now=now,
            )
        assert err.value.status == 500
    # A different Call-ID may update with any CSeq (§10.3 step 7).
    _, other = run(
        make_register(AOR, ["<sip:a@192.0.2.1>"], cseq=1, call_id="another"),
        current=first.bindings,
    )
    assert other.bindings[0].call_id == "another"


def test_star_with_stale_cseq_aborts_and_changes_nothing() -> None:
    _, first = run(make_register(AOR, ["<sip:a@192.0.2.1>"], cseq=5))
    with pytest.raises(Rejected):
        run(make_register(AOR, ["*"], cseq=3, expires=0), current=first.bindings)


def test_max_contacts_reject_is_403() -> None:
    policy = Policy(max_contacts=2)
    _, first = run(make_register(AOR, ["<sip:a@192.0.2.1>", "<sip:b@192.0.2.2>"]), policy=policy)
    with pytest.raises(Rejected) as err:
        run(
            make_register(AOR, ["<sip:c@192.0.2.3>"], call_id="c2"),
            current=first.bindings,
            policy=policy,
        )
    assert err.value.status == 403


def test_max_contacts_replace_oldest() -> None:
    policy = Policy(max_contacts=2, replace_oldest=True)
    _, a = run(make_register(AOR, ["<sip:a@192.0.2.1>"], call_id="a"), policy=policy)
    _, ab = run(
        make_register(AOR, ["<sip:b@192.0.2.2>"], call_id="b"),
        current=a.bindings,
        policy=policy,
        now=NOW + 10,
    )
    _, bc = run(
        make_register(AOR, ["<sip:c@192.0.2.3>"], call_id="c"),
        current=ab.bindings,
        policy=policy,
        now=NOW + 20,
    )
    assert sorted(b.contact for b in bc.bindings) == ["sip:b@192.0.2.2", "sip:c@192.0.2.3"]
    removed = [c.binding.contact for c in bc.changes if c.kind is ChangeKind.REMOVED]
    assert removed == ["sip:a@192.0.2.1"]


def test_q_values_order_bindings() -> None:
    _, out = run(
        make_register(
            AOR, ["<sip:low@192.0.2.1>;q=0.1", "<sip:high@192.0.2.2>;q=0.9", "<sip:none@192.0.2.3>"]
        )
    )
    assert [b.contact for b in out.bindings] == [
        "sip:none@192.0.2.3",  # no q counts as 1.0
        "sip:high@192.0.2.2",
        "sip:low@192.0.2.1",
    ]
    assert [b.q for b in out.bindings] == [None, 0.9, 0.1]


def test_bad_q_value_is_400() -> None:
    with pytest.raises(Rejected) as err:
        run(make_register(AOR, ["<sip:a@192.0.2.1>;q=2"]))
    assert err.value.status == 400


def test_path_stored_and_echoed_when_supported() -> None:
    path = [("Path", "<sip:edge1.example.com;lr>"), ("Supported", "path")]
    plan, out = run(make_register(AOR, ["<sip:a@192.0.2.1>"], extra=path))
    assert out.bindings[0].path == ("<sip:edge1.example.com;lr>",)
    assert plan.echo_path
    response = ok_response(
        make_register(AOR, ["<sip:a@192.0.2.1>"], extra=path), out.bindings, NOW, path=plan.path
    )
    assert response.get_all("path") == ["<sip:edge1.example.com;lr>"]


def test_path_without_support_is_stored_not_echoed_or_420_when_strict() -> None:
    req = make_register(AOR, ["<sip:a@192.0.2.1>"], extra=[("Path", "<sip:e.example.com;lr>")])
    plan, out = run(req)
    assert out.bindings[0].path == ("<sip:e.example.com;lr>",)
    assert not plan.echo_path
    with pytest.raises(Rejected) as err:
        run(req, policy=Policy(path_mode="strict"))
    assert err.value.status == 420


def test_unknown_required_extension_is_420() -> None:
    with pytest.raises(Rejected) as err:
        run(make_register(AOR, ["<sip:a@192.0.2.1>"], extra=[("Require", "foo, path")]))
    assert err.value.status == 420
    assert ("Unsupported", "foo") in err.value.headers


OB = [("Supported", "outbound, path")]
INSTANCE = '"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>"'


def test_outbound_same_instance_and_reg_id_replaces_the_flow() -> None:
    first_req = make_register(
        AOR, [f"<sip:a@192.0.2.1:5060;transport=tcp>;+sip.instance={INSTANCE};reg-id=1"], extra=OB
    )
    plan1, first = run(first_req)
    assert plan1.outbound
    # The UA reconnects: new source port, new contact, same instance and reg-id.
    second_req = make_register(
        AOR,
        [f"<sip:a@192.0.2.1:5070;transport=tcp>;+sip.instance={INSTANCE};reg-id=1"],
        extra=OB,
        call_id="reg-call-2",
    )
    facts2 = SourceFacts(remote_host="192.0.2.1", remote_port=5070, transport="tcp", flow_id="f2")
    _, second = run(second_req, current=first.bindings, facts=facts2)
    (b,) = second.bindings
    assert b.contact == "sip:a@192.0.2.1:5070;transport=tcp"
    assert (b.reg_id, b.flow_id) == (1, "f2")
    assert b.instance == "<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>"
    kinds = [c.kind for c in second.changes]
    assert kinds == [ChangeKind.REMOVED, ChangeKind.ADDED]
    response = ok_response(second_req, second.bindings, NOW, outbound=True)
    assert response.get("require") == "outbound"
    assert "reg-id=1" in (response.get("contact") or "")


def test_outbound_different_reg_id_keeps_both_flows() -> None:
    req = make_register(
        AOR,
        [
            f"<sip:a@192.0.2.1:5060>;+sip.instance={INSTANCE};reg-id=1",
            f"<sip:a@192.0.2.1:5061>;+sip.instance={INSTANCE};reg-id=2",
        ],
        extra=OB,
    )
    _, out = run(req)
    assert sorted(b.reg_id or 0 for b in out.bindings) == [1, 2]


def test_reg_id_ignored_without_outbound_support() -> None:
    req = make_register(AOR, [f"<sip:a@192.0.2.1>;+sip.instance={INSTANCE};reg-id=1"])
    plan, out = run(req)
    assert not plan.outbound
    assert out.bindings[0].reg_id is None


def test_outbound_required_by_ua_but_off_is_420() -> None:
    req = make_register(
        AOR,
        [f"<sip:a@192.0.2.1>;+sip.instance={INSTANCE};reg-id=1"],
        extra=[("Require", "outbound")],
    )
    with pytest.raises(Rejected) as err:
        run(req, policy=Policy(outbound_mode="off"))
    assert err.value.status == 420


def test_outbound_first_hop_without_ob_is_439() -> None:
    req = make_register(
        AOR,
        [f"<sip:a@192.0.2.1>;+sip.instance={INSTANCE};reg-id=1"],
        extra=[*OB, ("Path", "<sip:edge.example.com;lr>")],
    )
    with pytest.raises(Rejected) as err:
        run(req)
    assert err.value.status == 439
    ok = make_register(
        AOR,
        [f"<sip:a@192.0.2.1>;+sip.instance={INSTANCE};reg-id=1"],
        extra=[*OB, ("Path", "<sip:edge.example.com;lr;ob>")],
    )
    plan, _ = run(ok)
    assert plan.outbound


def test_query_without_contact_changes_nothing() -> None:
    existing = Binding(aor=AOR, contact="sip:a@192.0.2.1", expires_at=NOW + 50, call_id="x")
    plan, out = run(make_register(AOR, []), current=[existing])
    assert plan.is_query
    assert out.bindings == [existing]
    assert out.changes == []


def test_ok_lists_remaining_expires_and_date() -> None:
    req = make_register(AOR, ["<sip:a@192.0.2.1>"])
    b1 = Binding(aor=AOR, contact="sip:a@192.0.2.1", expires_at=NOW + 120.2, call_id="x")
    b2 = Binding(aor=AOR, contact="sip:b@192.0.2.2", expires_at=NOW + 3000, call_id="y", q=0.5)
    response = ok_response(req, [b1, b2], NOW)
    assert response.status == 200
    assert contact_expires(response) == {"sip:a@192.0.2.1": 120, "sip:b@192.0.2.2": 3000}
    assert response.get("date") == "Tue, 14 Nov 2023 22:13:20 GMT"
    assert "q=0.5" in response.get_all("contact")[1]
    assert response.to.tag  # §8.2.6.2


def test_the_same_register_again_within_a_transaction_lifetime_changes_nothing() -> None:
    """A retransmission (same Call-ID and CSeq, RFC 3261 §17.2.3) that reaches the
    registrar twice — the edge replays a request whose router stream broke — gets
    the bindings as they are instead of 500, and nothing changes."""
    _, first = run(make_register(AOR, ["<sip:a@192.0.2.1>"], cseq=5))
    _, again = run(
        make_register(AOR, ["<sip:a@192.0.2.1>"], cseq=5), current=first.bindings, now=NOW + 2
    )
    assert again.changes == []
    assert again.bindings == first.bindings
