"""Response context and best-response selection (RFC 3261 §16.7)."""

from __future__ import annotations

from sipmesh.sip.message import Request, Response
from sipmesh.sip.proxy import add_via, make_branch
from sipmesh.sip.proxy_response import (
    BranchState,
    ResponseContext,
    choose_best_response,
)
from sipmesh.sip.stateless import make_response


def incoming(method: str = "INVITE") -> Request:
    return Request(
        method,
        "sip:bob@example.com",
        [
            ("Via", "SIP/2.0/UDP client.example.org;branch=z9hG4bKup"),
            ("From", "<sip:alice@example.org>;tag=a"),
            ("To", "<sip:bob@example.com>"),
            ("Call-ID", "ctx-1"),
            ("CSeq", f"1 {method}"),
        ],
    )


def downstream(ctx: ResponseContext, index: int, status: int, **headers: str) -> Response:
    """A response as a branch would send it: our Via on top of the upstream ones."""
    fwd = incoming(ctx.request.method)
    add_via(fwd, "UDP", "192.0.2.1", 5060, make_branch(ctx.request, index))
    extra = [(k.replace("_", "-"), v) for k, v in headers.items()]
    return make_response(fwd, status, to_tag=f"b{index}", headers=extra)


def test_provisionals_forwarded_except_100_and_via_stripped() -> None:
    ctx = ResponseContext(incoming())
    b = ctx.add_branch()
    assert ctx.branch_state(b) is BranchState.CALLING
    assert ctx.on_response(b, downstream(ctx, b, 100)).forward == ()
    assert ctx.branch_state(b) is BranchState.PROCEEDING
    assert ctx.cancellable() == [b]
    ringing = downstream(ctx, b, 180)
    decision = ctx.on_response(b, ringing)
    assert decision.forward == (ringing,)
    assert [v.branch for v in ringing.vias] == ["z9hG4bKup"]


def test_2xx_forwarded_at_once_and_pending_cancelled() -> None:
    ctx = ResponseContext(incoming())
    b0, b1, b2 = ctx.add_branch(), ctx.add_branch(), ctx.add_branch()
    ctx.on_response(b1, downstream(ctx, b1, 180))
    ok = downstream(ctx, b0, 200)
    decision = ctx.on_response(b0, ok)
    assert decision.forward == (ok,)
    assert decision.cancel_pending == (b1, b2)
    assert not decision.finished
    # a second 2xx from another fork is forwarded too (INVITE)
    ok2 = downstream(ctx, b1, 200)
    assert ctx.on_response(b1, ok2).forward == (ok2,)
    # the cancelled branch answers 487: not forwarded, context finishes
    late = ctx.on_response(b2, downstream(ctx, b2, 487))
    assert late.forward == ()
    assert late.finished
    # provisionals after a final are not forwarded
    assert ctx.on_response(b2, downstream(ctx, b2, 183)).forward == ()


def test_non_invite_only_first_2xx_forwarded() -> None:
    ctx = ResponseContext(incoming("MESSAGE"))
    b0, b1 = ctx.add_branch(), ctx.add_branch()
    first = ctx.on_response(b0, downstream(ctx, b0, 202))
    assert first.cancel_pending == ()
    assert len(first.forward) == 1
    second = ctx.on_response(b1, downstream(ctx, b1, 200))
    assert second.forward == ()
    assert second.finished


def test_best_response_lowest_class_after_all_branches() -> None:
    ctx = ResponseContext(incoming())
    b0, b1, b2 = ctx.add_branch(), ctx.add_branch(), ctx.add_branch()
    assert ctx.on_response(b0, downstream(ctx, b0, 486)).forward == ()
    assert ctx.on_response(b1, downstream(ctx, b1, 302)).forward == ()
    decision = ctx.on_response(b2, downstream(ctx, b2, 500))
    assert [r.status for r in decision.forward] == [302]
    assert decision.finished
    assert [v.branch for v in decision.forward[0].vias] == ["z9hG4bKup"]


def test_6xx_wins_and_cancels_pending() -> None:
    ctx = ResponseContext(incoming())
    b0, b1, b2 = ctx.add_branch(), ctx.add_branch(), ctx.add_branch()
    ctx.on_response(b0, downstream(ctx, b0, 302))
    ctx.on_response(b1, downstream(ctx, b1, 180))
    decline = ctx.on_response(b2, downstream(ctx, b2, 603))
    assert decline.forward == ()  # §16.7 step 5: not forwarded at once
    assert decline.cancel_pending == (b1,)
    final = ctx.on_response(b1, downstream(ctx, b1, 487))
    assert [r.status for r in final.forward] == [603]


def test_503_becomes_500() -> None:
    ctx = ResponseContext(incoming())
    b = ctx.add_branch()
    decision = ctx.on_response(b, downstream(ctx, b, 503, Retry_After="10"))
    [resp] = decision.forward
    assert resp.status == 500
    assert resp.reason == "Server Internal Error"


def test_4xx_prefers_challenges_and_aggregates_them() -> None:
    ctx = ResponseContext(incoming())
    b0, b1, b2, b3 = (ctx.add_branch() for _ in range(4))
    ctx.on_response(b0, downstream(ctx, b0, 404))
    ctx.on_response(
        b1, downstream(ctx, b1, 407, Proxy_Authenticate='Digest realm="a.example", nonce="1"')
    )
    ctx.on_response(b2, downstream(ctx, b2, 486))
    decision = ctx.on_response(
        b3, downstream(ctx, b3, 401, WWW_Authenticate='Digest realm="b.example", nonce="2"')
    )
    [resp] = decision.forward
    assert resp.status == 407
    assert resp.get_all("Proxy-Authenticate") == ['Digest realm="a.example", nonce="1"']
    assert resp.get_all("WWW-Authenticate") == ['Digest realm="b.example", nonce="2"']
    assert resp.headers[-1][0] == "Content-Length"


def test_all_branches_time_out_gives_408() -> None:
    ctx = ResponseContext(incoming())
    b0, b1 = ctx.add_branch(), ctx.add_branch()
    assert ctx.on_timeout(b0).forward == ()
    decision = ctx.on_timeout(b1)
    [resp] = decision.forward
    assert resp.status == 408
    assert resp.call_id == "ctx-1"
    assert [v.branch for v in resp.vias] == ["z9hG4bKup"]
    assert ctx.on_timeout(b1).forward == ()  # already completed
    assert choose_best_response([], incoming()).status == 408


def test_timeout_loses_to_real_answer_and_best_response_preview() -> None:
    ctx = ResponseContext(incoming())
    b0, b1 = ctx.add_branch(), ctx.add_branch()
    ctx.on_response(b0, downstream(ctx, b0, 480))
    assert ctx.best_response().status == 480
    decision = ctx.on_timeout(b1)
    # same class: the real 480 beats the 408 we made up for the silent branch
    assert [r.status for r in decision.forward] == [480]
    assert ctx.all_completed
    assert ctx.pending() == []
    # but a made-up 408 still beats a real answer of a higher class
    ctx2 = ResponseContext(incoming())
    c0, c1 = ctx2.add_branch(), ctx2.add_branch()
    ctx2.on_response(c0, downstream(ctx2, c0, 500))
    assert [r.status for r in ctx2.on_timeout(c1).forward] == [408]
