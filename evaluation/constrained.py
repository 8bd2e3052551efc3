"""Check lines that cannot invent a figure: constrained decoding of the answer's check lines.

A check line is ``- CODE figure vs threshold kind: OUTCOME``. While the model writes one (from the ``-`` that
opens it to the ``:`` before its outcome), only tokens that continue one of the filing's own check-line heads are
allowed: the code of a rule in force for this filing that the answer has not checked yet, followed by the figure as
the filing states it and the threshold of the rule table, exactly as the rule engine renders them
(``regulator.rules.Check.line``), or ``DATA_QUALITY``; a rule's line is written once, so with every rule checked a
further check line can only be a data-quality finding. After the ``:`` the outcome is held to the answer format's
vocabulary for that head (REGULATOR_DOMAIN's outcome table): a line that compares two figures ends ``OK`` or ``BREACH`` — the
model's decision; a line that compares nothing cannot be either: a required item the filing leaves out (``not
reported``) or files empty (``nil``) is a ``DATA_QUALITY`` finding, and a figure the submission cannot give (its
template ``not filed`` in a module-wise submission, ``not mapped`` by the taxonomy) is ``NOT_ASSESSED``. The words of
the head the model wrote (the filing's own, as the report text shows them) say which. The line after a check line
keeps to the answer format too: a finding (``BREACH``, ``DATA_QUALITY``) is followed by its ``  measure:`` line,
anything else by the next check line or the ``DIRECTIVE:`` (a line that finds nothing carries no measure), and the
``DIRECTIVE:`` only once every rule in force has its line (the format's "one check line per rule that applies to
the report, breach or not"; until then the next line is a check line, whose rule and outcome are the model's). A measure
line, when the constraint is given the filing's ``measures`` (``regulator.render.remedies``: every remedy of the law
table with its legal basis in the filing's jurisdiction and US framework), writes one of them: no legal basis of
another jurisdiction, no invented remedy; which one stays the model's. The ``DIRECTIVE:`` line, given the filing's
closings (``regulator.render.closings``: every house style's sentence addressed to the filing's bank), writes one
that agrees with the answer's own measures (``the measures above`` after a measure, a no-measure closing
otherwise), then the answer ends. The model still decides every comparison, the order of its check lines, whether
a ``DATA_QUALITY`` line is due (its text is left free), which measure, and the closing's house style and cited
finding. No verdict of the rule engine enters the constraint: the heads are the rule table's for the filing.

The constraint works on decoded text, so it holds whatever the tokenizer (SmolLM2 writes digits one token each).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from regulator.render import MEASURE_PREFIX, closings, finding_phrases, remedies
from regulator.rules import rendered_entity, rendered_regime

FREE_CODE = "DATA_QUALITY"  # a data-quality finding's wording is the model's: only its code is guided
COMPARED = ("OK", "BREACH")  # the outcomes of a line that compares two figures
MISSING = ("DATA_QUALITY",)  # ...of one whose figure or threshold the filing leaves out or files empty
NOT_GIVEN = ("NOT_ASSESSED",)  # ...and of one the submission cannot give (template not filed, cell not mapped)
UNCOMPARED = NOT_GIVEN + MISSING
_NUMBER = re.compile(r"-?\d[\d,]*(\.\d+)?%?")
FINDINGS = ("BREACH", "DATA_QUALITY")  # the outcomes that carry a measure (regulator.render.due)
MEASURE_OPENING = f"  {MEASURE_PREFIX}"  # how a finding's measure line opens
AFTER_NOTHING = ("-", "DIRECTIVE:")  # how the line after a non-finding or a measure opens: next check, or directive
_DONE_CHECK_LINE = re.compile(r"^- .*: (OK|BREACH|DATA_QUALITY|NOT_ASSESSED)$")  # a check line, outcome complete
_MISSING_WORDS = ("not reported", "nil")  # regulator.xbrl.render_value: an absent fact, a nil one
DIRECTIVE_OPENING = "DIRECTIVE:"


@dataclass(frozen=True)
class AnswerWords:
    """The words one filing's answer may write on its free-text lines: each measure line one of ``measures``, the
    closing one of ``closings_due`` (after a measure) or ``closings_none`` (after none). Empty: those words are free."""

    measures: tuple[str, ...] = ()
    closings_due: tuple[str, ...] = ()
    closings_none: tuple[str, ...] = ()


def answer_words(jurisdiction: str, rule_set: str, bank: str, heads: Sequence[str]) -> AnswerWords:
    """A filing's ``AnswerWords``: the law table's remedies under its rule set (``regulator.rules.regime``) and the
    closings addressed to ``bank`` that cite a finding of its check-line ``heads``."""
    due, none = closings(bank, finding_phrases(heads))
    return AnswerWords(tuple(remedies(jurisdiction, rule_set)), tuple(due), tuple(none))


def report_words(report_text: str, heads: Sequence[str]) -> AnswerWords:
    """The same for a dataset row, read from its report text's header (it keeps the text, not the parsed filing)."""
    return answer_words(*rendered_regime(report_text), rendered_entity(report_text), heads)


def outcomes_for(head: str) -> tuple[str, ...]:
    """The outcomes a check line with this head (``CODE figure vs threshold kind``) may end with, from how its two
    sides are written (``regulator.xbrl.render_value``): ``COMPARED`` when both are figures, ``NOT_GIVEN`` when one
    is a reason the submission cannot give it (``not filed``, ``not mapped``), else ``MISSING``."""
    detail = head.split(" ", 1)[1] if " " in head else ""
    figure, _, rest = detail.partition(" vs ")
    threshold = rest.rsplit(" ", 1)[0]
    sides = (figure, threshold)
    if all(_NUMBER.fullmatch(side) for side in sides):
        return COMPARED
    if any(not _NUMBER.fullmatch(side) and side not in _MISSING_WORDS for side in sides):
        return NOT_GIVEN
    return MISSING


def next_line_openings(line: str) -> tuple[str, ...] | None:
    """How the line after ``line`` may open when ``line`` is a check line with its outcome written: a finding's
    measure line, or (after a line that finds nothing) the next check line or the directive; None for other lines."""
    done = _DONE_CHECK_LINE.match(line)
    if done is None:
        return None
    # "-" rather than "- ": past the dash the head constraint holds the line (its heads open with the space), so the
    # model keeps its own tokenisation of "- CODE"
    return (MEASURE_OPENING,) if done.group(1) in FINDINGS else AFTER_NOTHING


def allowed_heads(checks: Sequence[Any]) -> list[str]:
    """The heads a filing's check lines may have: ``CODE detail`` of each rule check of the rule engine (the text
    before ``: OUTCOME``), data-quality findings left out (their wording is free)."""
    return [c.line().rsplit(": ", 1)[0] for c in checks if c.code != FREE_CODE]


def heads_from_reference(answer: str) -> list[str]:
    """The same heads read off a reference answer (a dataset row keeps the answer, not the parsed filing): the
    text of each rule check line before its outcome; data-quality lines are left out."""
    heads = []
    for line in answer.splitlines():
        if line.startswith("- ") and ": " in line and not line[2:].startswith(FREE_CODE):
            heads.append(line[2:].rsplit(": ", 1)[0])
    return heads


class TokenStrings:
    """Every token id's decoded text, and the ids of each text (several ids may decode alike)."""

    def __init__(self, tokenizer: Any) -> None:
        self.text = [tokenizer.decode([i]) for i in range(len(tokenizer))]
        self.ids: dict[str, list[int]] = {}
        for i, s in enumerate(self.text):
            if s and "\ufffd" not in s:  # a partial UTF-8 byte never completes a head
                self.ids.setdefault(s, []).append(i)
        self.longest = max(len(s) for s in self.ids)

    def prefixes_of(self, text: str) -> list[int]:
        """Ids of the tokens whose text is a non-empty prefix of ``text``."""
        return [i for k in range(1, min(len(text), self.longest) + 1) for i in self.ids.get(text[:k], ())]

    def breaks_before(self, text: str) -> list[int]:
        """Ids of the tokens that end a line and open the next as a prefix of ``text``: ``\n`` + ``text[:k]``."""
        return [i for k in range(0, min(len(text), self.longest - 1) + 1) for i in self.ids.get("\n" + text[:k], ())]


@dataclass
class HeadConstraint:
    """The constraint of one answer being generated: its allowed heads and the text written so far."""

    heads: list[str]
    tokens: TokenStrings
    words: AnswerWords = AnswerWords()  # empty: measure and closing lines are free
    stops: tuple[int, ...] = ()  # the ids that end the answer, allowed once a held closing is written
    written: list[str] = field(default_factory=list)

    def push(self, token_id: int) -> None:
        """Record a generated token."""
        self.written.append(self.tokens.text[token_id])

    def _open_head(self) -> str | None:
        """The part of a check line written so far when the answer is inside a head (after ``-``, before the
        ``:`` that ends it), else None."""
        text = "".join(self.written)
        line = text[text.rfind("\n") + 1:]
        if not line.startswith("-") or ":" in line:
            return None
        return line[1:]

    def _checked(self) -> set[str]:
        """Codes of the check lines the answer has completed (their heads written up to the ``:``)."""
        text = "".join(self.written)
        return {line[2:].split(" ", 1)[0] for line in text.splitlines() if line.startswith("- ") and ":" in line}

    def _open_outcome(self) -> tuple[str, str] | None:
        """``(head, outcome written so far)`` while the answer writes the outcome of one of its allowed heads (after
        the ``:``, before the line ends), else None."""
        text = "".join(self.written)
        line = text[text.rfind("\n") + 1:]
        if not line.startswith("- ") or ":" not in line:
            return None
        head, _, after = line[2:].partition(":")
        return (head, after) if head in self.heads else None

    def _outcome_tokens(self) -> list[int] | None:
        """Token ids that continue the open outcome within its vocabulary (None: none open, or it is complete)."""
        open_outcome = self._open_outcome()
        if open_outcome is None:
            return None
        head, after = open_outcome
        targets = [f" {o}" for o in outcomes_for(head)]
        remainders = [t[len(after):] for t in targets if t.startswith(after) and len(t) > len(after)]
        if not remainders:
            return None  # the outcome is written: the line's end is the model's
        return sorted({i for r in remainders for i in self.tokens.prefixes_of(r)})

    def _after_nothing(self) -> tuple[str, ...]:
        """How the line after a non-finding or a measure may open: the next check line, or the ``DIRECTIVE:`` once
        every allowed head's rule has its line."""
        checked = self._checked()
        return AFTER_NOTHING if all(h.split(" ", 1)[0] in checked for h in self.heads) else AFTER_NOTHING[:1]

    def _measure_tokens(self) -> list[int] | None:
        """Token ids that continue an open measure line as one of ``measures``; once one is written, the line break
        to the next check line or the directive. None without measures, outside a measure line, or off them."""
        text = "".join(self.written)
        line = text[text.rfind("\n") + 1:]
        if not self.words.measures or not line.startswith(MEASURE_OPENING):
            return None
        partial = line[len(MEASURE_OPENING):]
        if any(partial == f" {m}" for m in self.words.measures):  # written: the next opens as after OK
            return sorted({i for o in self._after_nothing() for i in self.tokens.breaks_before(o)})
        return self._continuing(partial, self.words.measures)

    def _closing_tokens(self) -> list[int] | None:
        """Token ids that continue an open ``DIRECTIVE:`` line as one of the closings that agree with the measures
        written above it; once one is written, only the answer's end. None without closings, elsewhere, or off them."""
        text = "".join(self.written)
        cut = text.rfind("\n")
        line = text[cut + 1:]
        if not line.startswith(DIRECTIVE_OPENING):
            return None
        measured = any(written.startswith(MEASURE_OPENING) for written in text[:max(cut, 0)].split("\n"))
        targets = self.words.closings_due if measured else self.words.closings_none
        if not targets:
            return None
        partial = line[len(DIRECTIVE_OPENING):]
        if any(partial == f" {t}" for t in targets):
            return sorted(self.stops) or None
        return self._continuing(partial, targets)

    def _continuing(self, partial: str, texts: Sequence[str]) -> list[int] | None:
        """Token ids that continue ``partial`` as one of ``texts`` (each after a space); None when it is none's."""
        remainders = [t[len(partial):] for t in (f" {x}" for x in texts)
                      if t.startswith(partial) and len(t) > len(partial)]
        return sorted({i for r in remainders for i in self.tokens.prefixes_of(r)}) if remainders else None

    def _next_line_tokens(self) -> list[int] | None:
        """Token ids that keep the line after a completed check line to the format (``next_line_openings``): the
        line break right after its outcome, then the next line's opening; None once it is open, or elsewhere."""
        text = "".join(self.written)
        cut = text.rfind("\n")
        line = text[cut + 1:]
        openings = self._held(next_line_openings(line))
        if openings is not None:  # the outcome is written: the line ends here
            return sorted({i for o in openings for i in self.tokens.breaks_before(o)})
        previous = text[text.rfind("\n", 0, cut) + 1:cut] if cut >= 0 else ""
        openings = self._held(next_line_openings(previous)
                              or (AFTER_NOTHING if previous.startswith(MEASURE_OPENING) else None))
        if openings is None:
            return None
        remainders = [o[len(line):] for o in openings if o.startswith(line) and len(o) > len(line)]
        if not remainders:
            return None  # the next line is open: what follows is the model's (or a head's)
        return sorted({i for r in remainders for i in self.tokens.prefixes_of(r)})

    def _held(self, openings: tuple[str, ...] | None) -> tuple[str, ...] | None:
        """``openings`` with the directive held back while a rule has no line yet (``_after_nothing``)."""
        return self._after_nothing() if openings == AFTER_NOTHING else openings

    def allowed(self) -> list[int] | None:
        """The token ids allowed next, or None when the answer is free here."""
        outcome = self._outcome_tokens()
        if outcome is not None:
            return outcome
        following = self._next_line_tokens()
        if following is not None:
            return following
        for held in (self._measure_tokens(), self._closing_tokens()):
            if held is not None:
                return held
        partial = self._open_head()
        if partial is None or partial.startswith(f" {FREE_CODE}"):
            return None  # outside a head, or in a data-quality line (its wording is the model's)
        checked = self._checked()
        # every rule checked: a further line can only be a data-quality finding (no rule's line a second time, where
        # a degenerate answer would write any figure)
        targets = [f" {h}:" for h in self.heads if h.split(" ", 1)[0] not in checked] + [f" {FREE_CODE} "]
        remainders = [t[len(partial):] for t in targets if t.startswith(partial) and len(t) > len(partial)]
        if not remainders:
            return None  # a line the constraint did not open: left to the model
        return sorted({i for r in remainders for i in self.tokens.prefixes_of(r)})


def apply_constraints(logits: Any, constraints: Sequence[HeadConstraint | None]) -> Any:
    """Mask each row's logits to the tokens its constraint allows (rows without one, or free here, untouched)."""
    import torch

    for row, constraint in enumerate(constraints):
        allowed = constraint.allowed() if constraint is not None else None
        if allowed:
            keep = torch.tensor(allowed, device=logits.device)
            masked = torch.full_like(logits[row], float("-inf"))
            masked[keep] = logits[row, keep]
            logits[row] = masked
    return logits
