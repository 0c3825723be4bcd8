"""Kamailio's dialplan module over the ``dialplan`` table: ``dp.translate(dpid, input)``.

Rules of one ``dpid`` are tried in ``pr`` order (lower first, then table order). A
rule matches when ``match_len`` is 0 or equals the input's length, and ``match_exp``
matches by ``match_op``: 0 equal (the whole string), 1 regular expression (searched,
as PCRE's unanchored match; anchor with ``^…$``), 2 fnmatch shell pattern (``*``,
``?``, ``[0-9]``). The first matching rule translates and ends the search:

- ``subst_exp`` set: it is applied to the input and the output is ``repl_exp``
  with ``\\0`` (the whole match of ``subst_exp``) and ``\\1``…``\\9`` (its groups)
  replaced; when ``subst_exp`` does not match, the translation fails (as Kamailio,
  which does not go on to the next rule);
- ``subst_exp`` empty: the output is ``repl_exp`` as is, or the input unchanged
  when ``repl_exp`` is empty too.

``attrs`` of the rule come back with the output (Kamailio's ``attrs_pvar``).
Pseudo-variables inside expressions are not supported. Regular expressions are
Python's ``re`` (close to PCRE for the forms dialplans use); a bad one refuses the
whole reload, naming the row, and the old rules stay.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from sipmesh.state.db import Executor

MATCH_EQUAL = 0
MATCH_REGEX = 1
MATCH_FNMATCH = 2

_BACKREF = re.compile(r"\\(\d)")


class DialplanLoadError(ValueError):
    """A row cannot be used; the message names it."""


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value) if value is not None else default
    except (TypeError, ValueError):
        return default


@dataclass(frozen=True, slots=True)
class DpRule:
    id: int
    dpid: int
    pr: int
    match_op: int
    match_exp: str
    match_len: int = 0
    subst_exp: str = ""
    repl_exp: str = ""
    attrs: str = ""
    match_re: re.Pattern[str] | None = None
    subst_re: re.Pattern[str] | None = None
    # repl_exp split into literal text (str) and group numbers (int).
    repl_parts: tuple[str | int, ...] = ()

    def matches(self, text: str) -> bool:
        if self.match_len and len(text) != self.match_len:
            return False
        if self.match_op == MATCH_EQUAL:
            return text == self.match_exp
        if self.match_op == MATCH_REGEX:
            return self.match_re is not None and self.match_re.search(text) is not None
        return fnmatch.fnmatchcase(text, self.match_exp)

    def translate(self, text: str) -> str | None:
        if self.subst_re is None:
            return self.repl_exp if self.repl_exp else text
        found = self.subst_re.search(text)
        if found is None:
            return None
        out: list[str] = []
        for part in self.repl_parts:
            if isinstance(part, int):
                out.append(found.group(part) or "")
            else:
                out.append(part)
        return "".join(out)


def _repl_parts(repl: str) -> tuple[str | int, ...]:
    parts: list[str | int] = []
    pos = 0
    for m in _BACKREF.finditer(repl):
        if m.start() > pos:
            parts.append(repl[pos : m.start()])
        parts.append(int(m.group(1)))
        pos = m.end()
    if pos < len(repl):
        parts.append(repl[pos:])
    return tuple(parts)


def make_rule(row: Mapping[str, Any], n: int = 0) -> DpRule:
    """One rule from a row; raises DialplanLoadError for bad expressions."""
    rule_id = _int(row.get("id"), n)
    op = _int(row.get("match_op"))
    match_exp = str(row.get("match_exp") or "")
    subst_exp = str(row.get("subst_exp") or "")
    repl_exp = str(row.get("repl_exp") or "")
    if op not in (MATCH_EQUAL, MATCH_REGEX, MATCH_FNMATCH):
        raise DialplanLoadError(f"dialplan rule {rule_id}: match_op {op} is not 0, 1 or 2")
    try:
        match_re = re.compile(match_exp) if op == MATCH_REGEX else None
        subst_re = re.compile(subst_exp) if subst_exp else None
    except re.error as exc:
        raise DialplanLoadError(f"dialplan rule {rule_id}: bad regular expression: {exc}") from None
    parts = _repl_parts(repl_exp)
    groups = subst_re.groups if subst_re is not None else 0
    for part in parts:
        if isinstance(part, int) and part > groups:
            raise DialplanLoadError(
                f"dialplan rule {rule_id}: repl_exp uses \\{part} but subst_exp has"
                f" {groups} group(s)"
            )
    return DpRule(
        id=rule_id,
        dpid=_int(row.get("dpid")),
        pr=_int(row.get("pr")),
        match_op=op,
        match_exp=match_exp,
        match_len=_int(row.get("match_len")),
        subst_exp=subst_exp,
        repl_exp=repl_exp,
        attrs=str(row.get("attrs") or ""),
        match_re=match_re,
        subst_re=subst_re,
        repl_parts=parts,
    )


@dataclass(frozen=True)
class Dialplan:
    rules: Mapping[int, tuple[DpRule, ...]] = field(default_factory=lambda: MappingProxyType({}))

    def translate(self, dpid: int, text: str) -> tuple[str, str] | None:
        """dp_translate: (output, attrs) of the first matching rule, None when none
        matches (or the matching rule's subst_exp does not)."""
        for rule in self.rules.get(dpid, ()):
            if rule.matches(text):
                out = rule.translate(text)
                return None if out is None else (out, rule.attrs)
        return None

    def match(self, dpid: int, text: str) -> DpRule | None:
        """dp_match: the first rule of ``dpid`` matching ``text``, without translating."""
        for rule in self.rules.get(dpid, ()):
            if rule.matches(text):
                return rule
        return None


def build_dialplan(rows: Iterable[Mapping[str, Any]]) -> Dialplan:
    grouped: dict[int, list[tuple[int, int, DpRule]]] = {}
    for n, row in enumerate(rows):
        rule = make_rule(row, n)
        grouped.setdefault(rule.dpid, []).append((rule.pr, n, rule))
    return Dialplan(
        MappingProxyType(
            {dpid: tuple(r for _, _, r in sorted(items)) for dpid, items in grouped.items()}
        )
    )


async def load_dialplan(db: Executor) -> Dialplan:
    rows = await db.fetch(
        "SELECT id, dpid, pr, match_op, match_exp, match_len, subst_exp, repl_exp, attrs "
        "FROM dialplan ORDER BY dpid, pr, id"
    )
    return build_dialplan(rows)
