"""Parse a model answer in the regulator answer format into check outcomes, a violation set and a directive.

The format (see REGULATOR_DOMAIN.md)::

    ANALYSIS:
    - CET1_RATIO: CET1 ratio 3.51% vs 4.50% minimum (CRR Art 92(1)(a)): BREACH
    VIOLATIONS: CET1_RATIO
    DIRECTIVE: <free text>

Parsing is lenient about whitespace, case and missing sections, and strict about codes: a code that is not one of
``RULE_CODES`` is dropped. An answer with no ``VIOLATIONS:`` line predicts no violation (``parsed_ok`` is False), so
a model cannot gain recall by rambling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from regulator.rules import RULE_CODES

OUTCOMES: tuple[str, ...] = ("OK", "BREACH", "DATA_QUALITY")

_KNOWN = frozenset(RULE_CODES)
# "- CODE: free description (may hold colons): OUTCOME" — the outcome is anchored at the end of the line; a line
# without the description ("- LCR: BREACH") still states an outcome.
_CHECK_LINE = re.compile(
    r"^\s*[-*•]\s*([A-Za-z0-9_ ]+?)\s*:(?:.*:)?\s*(OK|BREACH|DATA[ _]QUALITY)\s*\.?\s*$", re.I
)
_HEADER = re.compile(r"^\s*(ANALYSIS|VIOLATIONS|DIRECTIVE)\s*:\s*(.*)$", re.I)
_NONE = frozenset({"NONE", "NO VIOLATIONS", "N/A", "-", ""})


@dataclass(frozen=True)
class ParsedAnswer:
    """What an answer claims.

    Attributes:
        checks: rule code -> outcome (``OK``, ``BREACH`` or ``DATA_QUALITY``) from the check lines (first line wins).
        violations: the codes on the ``VIOLATIONS`` line (empty for ``NONE`` or an unparseable answer).
        directive: the ``DIRECTIVE`` text with whitespace collapsed ("" if missing).
        parsed_ok: True when a ``VIOLATIONS`` line was found whose value is ``NONE`` or names a known code.
    """

    checks: dict[str, str] = field(default_factory=dict)
    violations: frozenset[str] = frozenset()
    directive: str = ""
    parsed_ok: bool = False

    def implied_violations(self) -> frozenset[str]:
        """Return the violation set the check lines imply: BREACH codes, plus DATA_QUALITY for any DATA_QUALITY line."""
        implied = {code for code, outcome in self.checks.items() if outcome == "BREACH"}
        if any(outcome == "DATA_QUALITY" for outcome in self.checks.values()):
            implied.add("DATA_QUALITY")
        return frozenset(implied)


def _normalise_code(raw: str) -> str:
    return re.sub(r"[\s-]+", "_", raw.strip()).upper()


def parse_violations(value: str) -> tuple[frozenset[str], bool]:
    """Parse the value of a ``VIOLATIONS:`` line; return (known codes, whether the value was meaningful)."""
    value = value.strip().rstrip(".").strip()
    if value.upper() in _NONE:
        return frozenset(), True
    codes = {_normalise_code(tok) for tok in re.split(r"[,;]|\s+and\s+", value, flags=re.I)}
    known = frozenset(codes & _KNOWN)
    return known, bool(known)


def parse_answer(text: str) -> ParsedAnswer:
    """Parse one answer; never raises (garbage parses to an empty, not-ok answer)."""
    checks: dict[str, str] = {}
    violations: frozenset[str] = frozenset()
    parsed_ok = seen_verdict = in_directive = False
    directive_lines: list[str] = []

    for line in (text or "").splitlines():
        header = _HEADER.match(line)
        if header is not None:
            name, value = header.group(1).upper(), header.group(2)
            # The first VIOLATIONS and the first DIRECTIVE count; a repeated section is the model rambling.
            in_directive = name == "DIRECTIVE" and not directive_lines
            if in_directive:
                directive_lines.append(value)
            elif name == "VIOLATIONS" and not seen_verdict:
                seen_verdict = True
                violations, parsed_ok = parse_violations(value)
            continue
        if in_directive:
            directive_lines.append(line)
            continue
        check = _CHECK_LINE.match(line)
        if check is not None and not seen_verdict:
            code = _normalise_code(check.group(1))
            if code in _KNOWN and code not in checks:
                checks[code] = _normalise_code(check.group(2))

    directive = " ".join(" ".join(directive_lines).split())
    return ParsedAnswer(checks=checks, violations=violations, directive=directive, parsed_ok=parsed_ok)
