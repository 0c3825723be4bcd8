"""The proxy's response context and best-response choice (RFC 3261 §16.7).

One :class:`ResponseContext` per proxied request: branches are added as they are
forwarded; every response from a branch goes through :meth:`ResponseContext.on_response`,
which says what to forward upstream now and whether pending branches must be
cancelled. When every branch has a final answer and nothing final went upstream yet,
the best response is chosen (§16.7 step 6), with 503 turned into 500 and 401/407
challenges of all branches merged (§16.7 step 7).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from sipmesh.sip.message import Request, Response
from sipmesh.sip.proxy import remove_top_via
from sipmesh.sip.stateless import make_response, reason_phrase

__all__ = ["BranchState", "ResponseContext", "ResponseDecision", "choose_best_response"]

# §16.7 step 6: in the 4xx class prefer answers that let the UAC retry successfully.
_PREFERRED_4XX = (401, 407, 415, 420, 484)
_CHALLENGE_HEADERS = ("WWW-Authenticate", "Proxy-Authenticate")


class BranchState(enum.Enum):
    CALLING = "calling"  # forwarded, nothing heard yet
    PROCEEDING = "proceeding"  # a provisional came back: CANCEL may be sent (§9.1)
    COMPLETED = "completed"  # final response (or timeout) received


@dataclass(slots=True)
class _Branch:
    state: BranchState = BranchState.CALLING
    final: Response | None = None


@dataclass(frozen=True, slots=True)
class ResponseDecision:
    """What to do after a branch response.

    ``forward``: responses to send upstream now (through the server transaction), in
    order. ``cancel_pending``: branches that must be cancelled now (2xx to INVITE, or a
    6xx, §16.7 step 10). ``finished``: the context has sent its final response(s) and
    every branch is completed.
    """

    forward: tuple[Response, ...] = ()
    cancel_pending: tuple[int, ...] = ()
    finished: bool = False


def choose_best_response(
    finals: list[Response], request: Request, *, local: Sequence[Response] = ()
) -> Response:
    """§16.7 step 6-7 over the final responses of all branches (none -> 408).

    6xx wins; otherwise the lowest class; in 4xx the ones of ``_PREFERRED_4XX`` first;
    then real answers before ``local`` ones (408s we made up for silent branches,
    as Kamailio's tm does); ties go to the earliest received. A chosen 503 becomes
    500 (the 503 was about a downstream element, not us); a chosen 401/407 carries
    the challenges of every 401/407 received.
    """
    if not finals:
        return make_response(request, 408)

    def rank(item: tuple[int, Response]) -> tuple[int, int, int, int]:
        order, resp = item
        cls = resp.status // 100
        cls_rank = 0 if cls == 6 else cls
        preferred = 0 if cls == 4 and resp.status in _PREFERRED_4XX else 1
        made_up = 1 if any(resp is x for x in local) else 0
        return (cls_rank, preferred, made_up, order)

    _, best = min(enumerate(finals), key=rank)
    if best.status == 503:
        out = Response(500, reason_phrase(500), best.headers, best.body)
        return out
    if best.status in (401, 407):
        out = Response(best.status, best.reason, best.headers, best.body)
        for other in finals:
            if other is best or other.status not in (401, 407):
                continue
            for name in _CHALLENGE_HEADERS:
                for value in other.get_all(name):
                    _insert_before_length(out, name, value)
        return out
    return best


def _insert_before_length(response: Response, name: str, value: str) -> None:
    # Keeps Content-Length the last header as make_response writes it; order is
    # not significant for SIP but stable output is easier to read and to test.
    length = response.get("Content-Length")
    if length is None:
        response.add(name, value)
        return
    response.remove("Content-Length")
    response.add(name, value)
    response.add("Content-Length", length)


@dataclass(slots=True)
class ResponseContext:
    """Response context of one proxied request (§16.7)."""

    request: Request  # as received (upstream Vias): used to build a 408 if all time out
    _branches: list[_Branch] = field(default_factory=list)
    _finals: list[Response] = field(default_factory=list)
    _local: list[Response] = field(default_factory=list)
    final_sent: bool = False  # a final response went upstream
    _best_sent: bool = False

    @property
    def is_invite(self) -> bool:
        return self.request.method == "INVITE"

    def add_branch(self) -> int:
        """Register a forwarded branch; returns its index (use it in make_branch)."""
        self._branches.append(_Branch())
        return len(self._branches) - 1

    def branch_state(self, index: int) -> BranchState:
        return self._branches[index].state

    def pending(self) -> list[int]:
        """Branches without a final response."""
        return [i for i, b in enumerate(self._branches) if b.state is not BranchState.COMPLETED]

    def cancellable(self) -> list[int]:
        """Pending branches that got a provisional: a CANCEL may go out now (§9.1)."""
        return [i for i, b in enumerate(self._branches) if b.state is BranchState.PROCEEDING]

    @property
    def all_completed(self) -> bool:
        return bool(self._branches) and not self.pending()

    def on_response(self, index: int, response: Response) -> ResponseDecision:
        """A response on branch ``index`` as received from downstream (our Via still on
        top: it is removed here, §16.7 step 3)."""
        branch = self._branches[index]
        remove_top_via(response)
        status = response.status
        if status < 200:
            if branch.state is BranchState.CALLING:
                branch.state = BranchState.PROCEEDING
            # §16.7 step 5: forward provisionals other than 100 until a final went up.
            if status == 100 or self.final_sent or branch.state is BranchState.COMPLETED:
                return ResponseDecision()
            return ResponseDecision(forward=(response,))
        if branch.state is BranchState.COMPLETED:
            # Another final on a completed branch: only a further 2xx to INVITE
            # matters (forked 2xx are forwarded, §16.7 step 5).
            if self.is_invite and 200 <= status < 300:
                return ResponseDecision(forward=(response,), finished=self.all_completed)
            return ResponseDecision(finished=self.final_sent and self.all_completed)
        branch.state = BranchState.COMPLETED
        branch.final = response
        if 200 <= status < 300:
            # §16.7 step 5: every 2xx goes up at once (for INVITE even after a final);
            # §16.7 step 10: then pending branches get CANCEL.
            if self.final_sent and not self.is_invite:
                return ResponseDecision(finished=self.all_completed)
            self.final_sent = True
            return ResponseDecision(
                forward=(response,),
                cancel_pending=tuple(self.pending()) if self.is_invite else (),
                finished=self.all_completed,
            )
        self._finals.append(response)
        cancel: tuple[int, ...] = ()
        if status >= 600 and not self.final_sent:
            # §16.7 step 10 (6xx): no other branch can do better; cancel the rest.
            cancel = tuple(self.pending())
        return self._maybe_best(cancel)

    def on_timeout(self, index: int) -> ResponseDecision:
        """Branch ``index`` gave no final (timer B/F/C, transport error): it counts as
        a 408 from that branch (§16.7 step 6, §16.8)."""
        branch = self._branches[index]
        if branch.state is BranchState.COMPLETED:
            return ResponseDecision(finished=self.final_sent and self.all_completed)
        branch.state = BranchState.COMPLETED
        timeout = make_response(self.request, 408)
        self._finals.append(timeout)
        self._local.append(timeout)
        return self._maybe_best(())

    def _maybe_best(self, cancel: tuple[int, ...]) -> ResponseDecision:
        if self.final_sent or not self.all_completed:
            return ResponseDecision(
                cancel_pending=cancel, finished=self.all_completed and self.final_sent
            )
        self.final_sent = True
        best = choose_best_response(self._finals, self.request, local=self._local)
        return ResponseDecision(forward=(best,), cancel_pending=cancel, finished=True)

    def best_response(self) -> Response:
        """The response §16.7 step 6 would pick from what arrived so far."""
        return choose_best_response(list(self._finals), self.request, local=self._local)
