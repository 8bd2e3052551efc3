"""Parse a model answer in the regulator answer format into check outcomes, a violation set and a directive.

The format (see README "Reading an answer")::

    ANALYSIS:
    - CET1_RATIO 3.51% vs 4.5% min: BREACH
      measure: raise CET1 capital or reduce risk-weighted assets (CRD Art 104(1)(c)) within 45 days
    - LEVERAGE 6.94% vs 3% min: OK
    - LARGE_EXPOSURE not mapped vs 25% limit: NOT_ASSESSED
    DIRECTIVE: <closing sentence: the measures above are due, or no measure is>

The check lines are the one source of truth for the verdict: the violation set is every code whose line says
``BREACH``, plus ``DATA_QUALITY`` when any line says ``DATA_QUALITY``. There is no separate verdict line that could
contradict them. A rule in force that the filing cannot give figures for has its line too, ``NOT_ASSESSED`` (never
a violation), so an answer names every rule in force and never decides by leaving a line out. Each finding's
``measure:`` line follows its check line; the directive is those measures in order, then the ``DIRECTIVE`` closing
sentence (``regulator.render.render_directive`` writes the reference the same way). Parsing is lenient
about whitespace, case and the older ``- CODE: description: OUTCOME`` lines, and strict about codes: a code that
is not one of ``RULE_CODES`` is dropped. An answer without a single readable check line predicts no violation
(``parsed_ok`` is False), so a model cannot gain recall by rambling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from regulator.render import join_directive
from regulator.rules import BREACH, DATA_QUALITY, NOT_ASSESSED, OK, RULE_CODES

OUTCOMES: tuple[str, ...] = (OK, BREACH, DATA_QUALITY, NOT_ASSESSED)

_KNOWN = frozenset(RULE_CODES)
# "- CODE detail: OUTCOME" (or the older "- CODE: detail: OUTCOME"); the outcome is anchored at the end of the line,
# the detail may hold colons, and a line without a detail ("- LCR: BREACH") still states an outcome.
CHECK_LINE = re.compile(
    r"^\s*[-*•]\s*([A-Za-z][A-Za-z0-9_]*)(?:\s*:?\s+(.*?))?\s*:\s*"
    r"(OK|BREACH|DATA[ _]QUALITY|NOT[ _]ASSESSED)\s*\.?\s*$", re.I
)
_MEASURE = re.compile(r"^\s*measure\s*:\s*(.*)$", re.I)
_HEADER = re.compile(r"^\s*(ANALYSIS|VIOLATIONS|DIRECTIVE)\s*:\s*(.*)$", re.I)


@dataclass(frozen=True)
class CheckLine:
    """One check line as written: the rule code (upper case), the detail text and the outcome."""

    code: str
    text: str
    outcome: str


@dataclass(frozen=True)
class ParsedAnswer:
    """What an answer claims.

    Attributes:
        checks: rule code -> outcome (``OK``, ``BREACH``, ``DATA_QUALITY`` or ``NOT_ASSESSED``) from the check lines
            (first line wins).
        violations: the codes the check lines imply (BREACH codes, plus DATA_QUALITY for any DATA_QUALITY line).
        measures: (code of the check line above, measure text) for each ``measure:`` line, in order.
        closing: the ``DIRECTIVE`` text with whitespace collapsed ("" if missing).
        directive: each measure's text closed by a full stop, then the closing: what ROUGE-L scores.
        parsed_ok: True when at least one check line of a known rule code was read.
    """

    checks: dict[str, str] = field(default_factory=dict)
    violations: frozenset[str] = frozenset()
    measures: tuple[tuple[str, str], ...] = ()
    closing: str = ""
    directive: str = ""
    parsed_ok: bool = False


def _normalise_code(raw: str) -> str:
    return re.sub(r"[\s-]+", "_", raw.strip()).upper()


def decides(outcome: str) -> bool:
    """True for an outcome that decides (``OK``, ``BREACH``, ``DATA_QUALITY``), as written or parsed; False for a
    ``NOT_ASSESSED`` statement, which check-line scores do not count."""
    return _normalise_code(outcome) != NOT_ASSESSED


def check_lines(text: str) -> list[CheckLine]:
    """Every check line of the answer's ANALYSIS (the lines before ``DIRECTIVE:``), in order, known codes or not."""
    out = []
    for line in (text or "").splitlines():
        if re.match(r"^\s*(VIOLATIONS|DIRECTIVE)\s*:", line, re.I):
            break
        match = CHECK_LINE.match(line)
        if match is not None:
            out.append(CheckLine(_normalise_code(match.group(1)), (match.group(2) or "").strip(),
                                 _normalise_code(match.group(3))))
    return out


def implied_violations(checks: dict[str, str]) -> frozenset[str]:
    """The violation set check outcomes imply: BREACH codes, plus DATA_QUALITY for any DATA_QUALITY line."""
    implied = {code for code, outcome in checks.items() if outcome == "BREACH"}
    if any(outcome == "DATA_QUALITY" for outcome in checks.values()):
        implied.add("DATA_QUALITY")
    return frozenset(implied)


def parse_answer(text: str) -> ParsedAnswer:
    """Parse one answer; never raises (garbage parses to an empty, not-ok answer)."""
    checks: dict[str, str] = {}
    for line in check_lines(text):
        if line.code in _KNOWN and line.code not in checks:
            checks[line.code] = line.outcome
    measures: list[tuple[str, str]] = []
    closing_lines: list[str] = []
    section, code = "ANALYSIS", ""
    for line in (text or "").splitlines():
        header = _HEADER.match(line)
        if header is not None:
            # The first DIRECTIVE counts; a repeated section is the model rambling.
            if section == "DIRECTIVE":
                break
            section = header.group(1).upper()
            if section == "DIRECTIVE":
                closing_lines.append(header.group(2))
            continue
        if section == "DIRECTIVE":
            closing_lines.append(line)
        elif (check := CHECK_LINE.match(line)) is not None:
            code = _normalise_code(check.group(1))
        elif (found := _MEASURE.match(line)) is not None and section == "ANALYSIS":
            measures.append((code, " ".join(found.group(1).split())))
    closing_text = " ".join(" ".join(closing_lines).split())
    directive = join_directive([m for _, m in measures], closing_text)
    return ParsedAnswer(checks=checks, violations=implied_violations(checks), measures=tuple(measures),
                        closing=closing_text, directive=directive, parsed_ok=bool(checks))
