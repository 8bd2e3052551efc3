"""Analyse XBRL filings with the promoted model, guarded by the prudential rule engine.

For each filing: parse it, render the compact report, let the model answer (optional), parse the answer into its
check lines, violation set and directive, and compare everything with the rule engine. The rule engine is the
oracle; the model is never trusted on its own:

- the violation set its check lines imply must equal the rule engine's ("model missed LEVERAGE", "model reported
  LCR which the rules do not find");
- every figure its ``ANALYSIS`` quotes (percentages, basis points, amounts in millions) must be a figure of the
  filing for that rule (a reported fact, the threshold or a ratio the rule engine recomputes from components),
  allowing only the rounding of the precision the model displays;
- a number the guardrail cannot read as a figure is itself a reason for review.

Statuses, most severe first: ``error`` (the file could not be read or parsed; the reason says why),
``cannot_assess`` (parsed, but facts the rules need are missing or nil: no guessing), ``needs_review`` (the model
disagrees with the rules or quotes an unverifiable figure, or the parser warned), ``ok``. A violation is not an
error: a compliant and a breaching bank are both ``ok`` when the assessment itself is trustworthy.

No Prefect and no model here (this package is the domain: parse, rules, render, generate): the model's answers come
in through :func:`assess_filings`'s ``answer`` function, which ``finetune.analysis`` builds from a model folder;
the CLI (``finetune analyze``) and the flow ``flows/analyze.py`` call ``finetune.analysis.analyze_filings``.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import stat
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from regulator.answers import ParsedAnswer, check_lines, parse_answer
from foundation.errors import DataError, XBRLError
from regulator.rules import (BREACH, DATA_QUALITY, NOT_ASSESSED, RULE_CODES, Rule, RuleResult, applicable_rules,
                             assessable_rules, evaluate_rules, regime)
from regulator.bulk import is_bulk_schedule
from regulator.packages import read_filing_file, scan_filings
from regulator.render import DUE_PHRASE, MEASURED_CODES, measure, remedy_code
from regulator.taxonomy import BY_CODE, KIND, RATIO
from regulator.xbrl import ParsedReport, parse_xbrl_file, render_value

OK, NEEDS_REVIEW, CANNOT_ASSESS, ERROR = "ok", "needs_review", "cannot_assess", "error"
STATUSES: tuple[str, ...] = (OK, NEEDS_REVIEW, CANNOT_ASSESS, ERROR)
# US prompt-corrective-action inputs beyond the rules' own facts (total assets, for the tangible-equity test).
_PCA_FACTS = ("RCON2170",)

Progress = Callable[[str, int, int], None]


@dataclass
class FilingResult:
    """The outcome for one filing (JSON-able through :meth:`to_dict`).

    Attributes:
        file: the path analysed.
        status: ``ok``, ``needs_review``, ``cannot_assess`` or ``error``.
        reasons: why the status is not ``ok`` (one sentence each); empty for ``ok``.
        entity, entity_id, jurisdiction, form, report_date: identity of the filing ("" when unreadable).
        key_figures: the facts the applicable rules (and the US PCA category) use, by datapoint code:
            ``{"label", "value" (currency units or decimal ratio; None when nil or absent), "unit", "display"}``.
        rule_findings: every check of the rule engine: ``code``, ``description`` (the check line), ``figure``,
            ``threshold`` (decimals for ratios), ``outcome`` (OK/BREACH/DATA_QUALITY/NOT_ASSESSED), ``margin``,
            ``legal_reference``.
        rule_violations: the rule engine's violation codes (fixed order); DATA_QUALITY for inconsistent figures.
        pca_category: US prompt-corrective-action category (12 CFR 324.403), None for EU or missing inputs.
        model_violations: the codes the model's check lines imply ([] for none); None without a model or when the
            answer has no readable check line (then ``model_answer`` is a string).
        model_checks: the model's check lines as ``{"code", "text", "outcome"}`` (None without a model).
        model_directive: the model's directive, its measure lines then its DIRECTIVE closing (None without a model).
        model_answer: the model's raw answer (None without a model).
    """

    file: str
    status: str
    reasons: list[str] = field(default_factory=list)
    entity: str = ""
    entity_id: str = ""
    jurisdiction: str = ""
    form: str = ""
    report_date: str = ""
    key_figures: dict[str, dict[str, Any]] = field(default_factory=dict)
    rule_findings: list[dict[str, Any]] = field(default_factory=list)
    rule_violations: list[str] = field(default_factory=list)
    pca_category: str | None = None
    model_violations: list[str] | None = None
    model_checks: list[dict[str, str]] | None = None
    model_directive: str | None = None
    model_answer: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (field order as declared)."""
        return asdict(self)


# ---------------------------------------------------------------------------------------------------------------
# Files


def expand_paths(paths: list[Path]) -> tuple[list[Path], list[FilingResult]]:
    """Expand folders into their XBRL files (``*.xml``, ``*.xbrl``, recursive, sorted); keep named files as given.

    Returns the files (duplicates removed, order kept) and an ``error`` result for every path that does not exist,
    every folder without an XBRL file and every entry a folder's search skipped (a folder it may not read, a
    symbolic link to a folder: ``scan_filings``), so that no filing is left out without a word.
    """
    files: list[Path] = []
    errors: list[FilingResult] = []
    for path in map(Path, paths):
        if path.is_dir():
            found, skipped = scan_filings(path)
            errors.extend(FilingResult(str(entry), ERROR, [f"{entry}: {why}"]) for entry, why in skipped)
            if not found and not skipped:
                errors.append(FilingResult(str(path), ERROR, [f"{path}: folder holds no *.xml, *.xbrl or *.zip file"]))
            files.extend(found)
        elif path.exists() or path.is_symlink():  # a dangling link or a loop: read_filing says which
            files.append(path)
        else:
            errors.append(FilingResult(str(path), ERROR, [f"{path}: no such file or folder"]))
    return list(dict.fromkeys(files)), errors


def read_filings(path: Path) -> list[ParsedReport | FilingResult]:
    """The filings of one file: an XBRL instance, a zip (an xBRL-CSV report package, or a bulk zip of instances
    such as the FFIEC CDR's) or an FFIEC CDR bulk schedule (a filing per bank); an ``error`` result names each reason
    instead of raising."""
    if path.suffix.lower() != ".zip" and not is_bulk_schedule(path):
        return [read_filing(path)]
    out: list[ParsedReport | FilingResult] = []
    try:
        for got in read_filing_file(path):
            out.append(FilingResult(getattr(got, "source", str(path)), ERROR, [str(got)])
                       if isinstance(got, XBRLError) else got)
    except XBRLError as exc:
        out.append(FilingResult(str(path), ERROR, [str(exc)]))
    except Exception as exc:  # one odd zip must never stop the other filings; the reason names the failure
        reader = "bulk schedule reader" if is_bulk_schedule(path) else "zip reader"
        out.append(FilingResult(str(path), ERROR, [f"{path}: the {reader} failed ({type(exc).__name__}: {exc})"]))
    return out


def read_filing(path: Path) -> ParsedReport | FilingResult:
    """Parse one filing; return an ``error`` result naming the reason instead of raising."""
    try:
        return parse_xbrl_file(path)
    except (DataError, OSError) as exc:  # XBRLError is a DataError; OSError: unreadable after the size check
        reason = str(exc) if isinstance(exc, XBRLError) else f"{path}: cannot read the file ({exc})"
        return FilingResult(str(path), ERROR, [reason])
    except Exception as exc:  # one hostile or odd file must never stop the others; the reason names the failure
        return FilingResult(str(path), ERROR, [f"{path}: the parser failed ({type(exc).__name__}: {exc})"])


# ---------------------------------------------------------------------------------------------------------------
# Rule engine side


def _required_facts(rules: list[Rule]) -> dict[str, list[str]]:
    """Datapoint code -> the rule codes that need it (figure, bank-specific threshold, numerator, denominator)."""
    needed: dict[str, list[str]] = {}
    for rule in rules:
        for code in (rule.figure, rule.threshold_fact, rule.numerator, rule.denominator):
            if code and rule.code not in needed.setdefault(code, []):
                needed[code].append(rule.code)
    return needed


def _label(code: str) -> str:
    return BY_CODE[code].label if code in BY_CODE else code


def _fact_name(code: str) -> str:
    return f"{_label(code)} ({code})"


def missing_facts_reason(parsed: ParsedReport, rules: list[Rule]) -> str:
    """``"cannot assess: missing X, Y ..."`` naming the absent or nil facts and the rules that need them, or ``""``."""
    if not rules:
        return (f"cannot assess: no {parsed.jurisdiction} rule in force on {parsed.report_date!r}; "
                "the rule engine holds rules from 2014 on")
    needed = _required_facts(rules)
    missing = [code for code in needed if parsed.facts.get(code) is None and code not in parsed.unreadable]
    if not missing:
        return ""
    items = [f"{_label(c)} ({c}, {'nil' if c in parsed.facts else 'not reported'})" for c in missing]
    affected = [code for code in RULE_CODES if any(code in needed[c] for c in missing)]
    return f"cannot assess: missing {'; '.join(items)} — needed by {', '.join(affected)}"


def key_figures(parsed: ParsedReport, rules: list[Rule]) -> dict[str, dict[str, Any]]:
    """The facts the applicable rules use (plus US PCA inputs), with unit and the report's display."""
    codes = list(_required_facts(rules))
    if parsed.jurisdiction == "US":
        codes += [c for c in _PCA_FACTS if c not in codes]
    out = {}
    for code in codes:
        unit = parsed.units.get(code, "").rpartition(":")[2]
        out[code] = {
            "label": _label(code),
            "value": parsed.facts.get(code),
            "unit": unit or ("pure" if KIND.get(code) == RATIO else parsed.currency),
            "display": render_value(code, parsed.facts.get(code), code in parsed.facts),
        }
    return out


def _findings(result: RuleResult) -> list[dict[str, Any]]:
    return [
        {"code": c.code, "description": c.description, "figure": c.figure, "threshold": c.threshold,
         "outcome": c.outcome, "margin": c.margin, "legal_reference": c.legal_reference}
        for c in result.checks
    ]


# ---------------------------------------------------------------------------------------------------------------
# The guardrail


# Tokens that hold digits but are not figures: datapoint codes, rule codes, capital tiers, legal references.
_IDENTIFIERS = re.compile(
    r"\bC\s?\d{2}\.\d{2}(?:\s+r\d{4})?(?:\s+c\d{4})?"                       # COREP template / row / column
    r"|\b[A-Z]{4}[A-Z0-9]{4}\b"                                               # MDRM concept (RCOAP859)
    r"|\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b"                                         # rule code (CET1_RATIO)
    r"|\b(?:CET1|AT1|T1|T2|Tier\s+[12])\b"                                   # capital tiers
    r"|\b(?:CRR|CRD)\s+Art(?:icles?|\.)?\s+\d+[\w()]*(?:\s*(?:,|and)\s*\d+[\w()]*)*"
    r"|\b\d+\s+CFR\s+(?:part\s+)?\d+(?:\.\d+)?(?:\(\w+\))*"
    r"|\b\d+\s+U\.S\.C\.\s+\d+\w*(?:\(\w+\))*"
    r"|\b(?:Delegated\s+|Del\.\s+|Implementing\s+)?Reg(?:ulation|\.)\s+(?:\((?:EU|EC)\)\s+(?:No\s+)?)?\d+/\d+"
    r"|\bscale error x\d+(?:\.\d+)?"
)
# A figure: optional sign, digits (thousands separators allowed), decimals, a unit. Bare numbers are amounts in
# millions, as the report displays them.
_FIGURE = re.compile(
    r"(?<![\w.,])([-−]?)(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?"
    r"(\s*%|\s*(?:pp|bps?|m|mn|million|bn|billion|percent|per cent)\b)?(?![\w%])"
)
_SCALE = {"%": 0.01, "percent": 0.01, "per cent": 0.01, "pp": 0.01, "bp": 1e-4, "bps": 1e-4,
          "": 1e6, "m": 1e6, "mn": 1e6, "million": 1e6, "bn": 1e9, "billion": 1e9}


@dataclass(frozen=True)
class Figure:
    """A number the model quoted: its text, its value in report units (decimal ratio or currency), the rounding
    its displayed precision allows, and whether it is a ratio."""

    text: str
    value: float
    tolerance: float
    is_ratio: bool


@dataclass(frozen=True)
class _Reference:
    label: str
    value: float
    is_ratio: bool


def quoted_figures(text: str) -> tuple[list[Figure], list[str]]:
    """Extract the figures of a check line; also return number-bearing tokens that are neither figure nor code."""
    masked = _IDENTIFIERS.sub(lambda m: " " * len(m.group(0)), text)
    figures = []
    for m in _FIGURE.finditer(masked):
        sign, whole, frac, unit = m.group(1), m.group(2), m.group(3) or "", (m.group(4) or "").strip().lower()
        scale = _SCALE[unit]
        value = float(f"{whole.replace(',', '')}.{frac or '0'}") * scale * (-1 if sign else 1)
        figures.append(Figure(m.group(0).strip(), value, 0.5 * 10 ** -len(frac) * scale, scale < 1))
    rest = _FIGURE.sub(lambda m: " " * len(m.group(0)), masked)
    unreadable = [tok for tok in rest.split() if any(ch.isdigit() for ch in tok)]
    return figures, unreadable


def model_check_lines(answer: str) -> list[dict[str, str]]:
    """The check lines of an answer's ANALYSIS: ``{"code", "text", "outcome"}``, in order."""
    return [{"code": c.code, "text": c.text, "outcome": c.outcome} for c in check_lines(answer)]


def _fact_ref(parsed: ParsedReport, code: str) -> list[_Reference]:
    value = parsed.facts.get(code)
    return [] if value is None else [_Reference(_fact_name(code), value, KIND.get(code) == RATIO)]


def _rule_refs(parsed: ParsedReport, rule: Rule) -> list[_Reference]:
    """What a check line of ``rule`` may quote: its facts (an FFIEC 031 ratio under either approach), its threshold,
    the ratio recomputed from components."""
    refs = [r for code in (rule.figure, rule.threshold_fact, rule.numerator, rule.denominator) if code
            for r in _fact_ref(parsed, code)]
    if parsed.advanced.get(rule.figure) is not None:
        refs.append(_Reference(f"{_fact_name(rule.figure)} advanced approaches", parsed.advanced[rule.figure], True))
    if rule.threshold is not None:
        refs.append(_Reference(f"{rule.code} threshold", rule.threshold, True))
    num, den = parsed.facts.get(rule.numerator), parsed.facts.get(rule.denominator)
    if num is not None and den and math.isfinite(num / den):
        # The rule engine displays a recomputed ratio after rounding to 4 decimals; accept both.
        refs.append(_Reference(f"{rule.description} from components", num / den, True))
        refs.append(_Reference(f"{rule.description} from components", round(num / den, 4), True))
    return refs


def _matches(fig: Figure, ref: _Reference) -> bool:
    """Same kind, and equal to the reference once rounded to the precision the model displays."""
    slack = fig.tolerance + 1e-9 * max(1.0, abs(ref.value))  # float noise of the decimal conversion
    return fig.is_ratio == ref.is_ratio and abs(fig.value - ref.value) <= slack


def _figure_reasons(parsed: ParsedReport, rules: list[Rule], checks: list[dict[str, str]]) -> list[str]:
    every = [r for rule in rules for r in _rule_refs(parsed, rule)]
    every += [r for code in parsed.facts for r in _fact_ref(parsed, code)]
    by_code: dict[str, list[_Reference]] = {}
    for rule in rules:
        by_code.setdefault(rule.code, []).extend(_rule_refs(parsed, rule))
    reasons = []
    for check in checks:
        code = check["code"]
        # A data-quality line may cite any fact or recomputed ratio; a rule's line only the figures of that rule.
        allowed = by_code.get(code) if code != DATA_QUALITY else every
        figures, unreadable = quoted_figures(check["text"])
        for token in unreadable:
            reasons.append(f"model's {code} line holds a number that cannot be checked against the filing: {token!r}")
        for fig in figures:
            if any(_matches(fig, r) for r in allowed or every):
                continue
            elsewhere = next((r for r in every if _matches(fig, r)), None)
            if elsewhere is not None and allowed:
                reasons.append(f"model's {code} line quotes {fig.text}, which the filing reports for "
                               f"{elsewhere.label}, not for this rule")
            elif elsewhere is None:
                reasons.append(f"model's {code} line quotes {fig.text}, a figure not in the filing")
    return reasons


def _measure_reasons(parsed: ParsedReport, checks: list[dict[str, str]], answer: ParsedAnswer) -> list[str]:
    """Each finding of the model carries its measure, the one the law attaches to that rule, and only findings do
    (``regulator.render``): name every finding without one, every measure under a line that finds nothing, and
    every measure that is not its rule's."""
    reasons = []
    outcomes: dict[str, str] = {}
    for check in checks:
        outcomes.setdefault(check["code"], check["outcome"])
    findings = [code for code, outcome in outcomes.items() if outcome in (BREACH, DATA_QUALITY)]
    measured = [code for code, _ in answer.measures]
    for code in findings:
        if code not in measured:
            reasons.append(f"model's {code} finding has no measure line")
    for code, text in answer.measures:
        if code not in findings:
            reasons.append(f"model writes a measure under {code or 'no check line'}, which it does not find")
        elif (remedy := remedy_code(code, outcomes[code])) in MEASURED_CODES and \
                text.rstrip(".") != (rule := measure(parsed, remedy)):
            reasons.append(f"model's {code} measure is not the rule's ({text!r}; the rule's: {rule!r})")
    return reasons


def review_answer(parsed: ParsedReport, result: RuleResult, answer: str) -> tuple[ParsedAnswer, list[dict[str, str]],
                                                                                   list[str]]:
    """Check a model answer against the rule engine and the filing's figures.

    Returns the parsed answer, its check lines and the reasons for review (empty when the answer agrees with the
    rules on every violation, agrees with itself, covers every applicable rule and quotes only the filing's figures).
    """
    parsed_answer = parse_answer(answer)
    checks = model_check_lines(answer)
    if not parsed_answer.parsed_ok:
        return parsed_answer, checks, ["model answer has no readable check line (- CODE figure vs threshold: "
                                       "OUTCOME); its verdict cannot be compared with the rules"]
    reasons = []
    rules_set, model_set = set(result.violations), set(parsed_answer.violations)
    model_outcome = {c["code"]: c["outcome"] for c in reversed(checks)}  # first line per code wins
    for code in RULE_CODES:
        if code in rules_set - model_set:
            said = f" (its check line says {model_outcome[code]})" if model_outcome.get(code) else ""
            reasons.append(f"model missed {code}{said}")
        elif code in model_set - rules_set:
            reasons.append(f"model reported {code} which the rules do not find")
    rules = applicable_rules(regime(parsed), parsed.report_date)
    applicable = {c.code for c in result.checks}
    for code in RULE_CODES:
        if code in applicable and code not in model_outcome:
            reasons.append(f"model's analysis has no check line for {code}")
    for code in dict.fromkeys(c["code"] for c in checks):
        if code not in applicable and code != DATA_QUALITY:
            known = code in RULE_CODES
            reasons.append(f"model checks {code}, which {'does not apply to' if known else 'is not a rule of'} "
                           f"this {parsed.jurisdiction} filing")
    reasons.extend(_figure_reasons(parsed, rules, checks))
    # A model that loops repeats check lines and never reaches its directive (bench/NOTES.md, levers 21-22 demo).
    repeated = {code: n for code, n in Counter(c["code"] for c in checks).items() if n > 1}
    if repeated:
        reasons.append("model's analysis repeats check lines (" + ", ".join(
            f"{code} {n} times" for code, n in repeated.items()) + "): the answer is degenerate")
    reasons.extend(_measure_reasons(parsed, checks, parsed_answer))
    if not parsed_answer.closing:
        reasons.append("model answer has no directive (no DIRECTIVE: section, or an empty one)")
    reasons.extend(_closing_reasons(parsed, parsed_answer))
    return parsed_answer, checks, reasons


def _closing_reasons(parsed: ParsedReport, answer: ParsedAnswer) -> list[str]:
    """The directive's closing sentence must agree with the measures above it and be addressed to the filing's
    bank: every house style's closing for measures due says ``the measures above`` and none of its closings for no
    measure does (``regulator.render.TEMPLATE_FAMILIES``). Seen on real-derived filings: five measures, then
    ``Escalation for 451965: no measure is required.``, or a closing addressed to ``CET1 capital``."""
    if not answer.closing:
        return []
    reasons = []
    says_due = DUE_PHRASE in answer.closing.lower()
    if answer.measures and not says_due:
        reasons.append(f"model's closing does not call for the {len(answer.measures)} measure(s) it wrote "
                       f"({answer.closing!r})")
    elif not answer.measures and says_due:
        reasons.append(f"model's closing calls for measures it did not write ({answer.closing!r})")
    if parsed.entity_name and parsed.entity_name.lower() not in answer.closing.lower():
        reasons.append(f"model's closing is not addressed to {parsed.entity_name} ({answer.closing!r})")
    return reasons


# ---------------------------------------------------------------------------------------------------------------
# One filing, then many


def analyze_report(parsed: ParsedReport, answer: str | None = None) -> FilingResult:
    """Assess one parsed filing with the rule engine and, when given, review the model's ``answer``."""
    in_force = applicable_rules(regime(parsed), parsed.report_date)
    rules = assessable_rules(parsed)
    result = evaluate_rules(parsed)
    out = FilingResult(
        file=parsed.source, status=OK, entity=parsed.entity_name, entity_id=parsed.entity_id,
        jurisdiction=parsed.jurisdiction, form=parsed.form, report_date=parsed.report_date,
        key_figures=key_figures(parsed, rules), rule_findings=_findings(result),
        rule_violations=list(result.violations), pca_category=result.pca_category,
    )
    skipped = [rule for rule in in_force if rule not in rules]
    if skipped:
        why = {code: parsed.unreadable[code] for rule in skipped for code in (rule.figure, rule.threshold_fact)
               if code in parsed.unreadable}
        out.reasons.append("not assessed: " + ", ".join(dict.fromkeys(r.code for r in skipped)) + " (" + "; ".join(
            f"{_label(code)} {code} {reason}" for code, reason in why.items()) + ")")
    missing = missing_facts_reason(parsed, rules) if rules or not in_force else (
        "cannot assess: no figure a rule in force needs can be read from this filing")
    if missing:
        out.reasons.append(missing)
    # A parser warning means the figures assessed rest on a choice the parser made (a duplicate fact, a currency).
    out.reasons.extend(f"parser warning: {w}" for w in parsed.warnings)
    if answer is not None:
        parsed_answer, checks, reasons = review_answer(parsed, result, answer)
        out.model_violations = ([c for c in RULE_CODES if c in parsed_answer.violations]
                                if parsed_answer.parsed_ok else None)
        out.model_checks = checks
        out.model_directive = parsed_answer.directive
        out.model_answer = answer
        out.reasons.extend(reasons)
    out.reasons = list(dict.fromkeys(out.reasons))  # a figure quoted twice is one reason
    out.status = CANNOT_ASSESS if missing else NEEDS_REVIEW if out.reasons else OK
    return out


AnswerFn = Callable[[list[ParsedReport], "Progress | None"], list[str]]


def assess_filings(paths: list[Path], *, answer: AnswerFn | None = None, progress: Progress | None = None,
                   ) -> list[FilingResult]:
    """Assess every filing under ``paths`` (files, zips or folders); one result per filing, in file order.

    Unreadable files and paths come first as ``error`` results; no file stops the others. ``answer``, when given,
    returns a model's answer for each parsed report (the model itself lives above this package:
    ``finetune.analysis``); without it only the rule engine runs (``model_*`` fields stay None).

    Args:
        progress: called as ``progress(phase, done, total)`` with phase ``"read"`` per file (and ``"generate"``
            per generation batch, by the answer function).
    """
    files, results = expand_paths(paths)
    parsed: list[ParsedReport] = []
    for i, path in enumerate(files, start=1):
        for got in read_filings(path):
            if isinstance(got, FilingResult):
                results.append(got)
            else:
                parsed.append(got)
        if progress is not None:
            progress("read", i, len(files))
    answers: list[str | None] = [None] * len(parsed)
    if answer is not None and parsed:
        answers = list(answer(parsed, progress))
    for report, text in zip(parsed, answers):
        try:
            results.append(analyze_report(report, text))
        except Exception as exc:  # a rule-engine failure on one odd filing is that filing's error, not the batch's
            results.append(FilingResult(report.source, ERROR, [f"{report.source}: the rule engine failed "
                                                                f"({type(exc).__name__}: {exc})"]))
    order = {str(p): i for i, p in enumerate(files)}  # a zip's members ("bulk.zip!bank.xml") sort with their zip
    return sorted(results, key=lambda r: (r.file.split("!")[0] in order, order.get(r.file.split("!")[0], 0), r.file))


def summarize(results: list[FilingResult] | list[dict[str, Any]]) -> dict[str, int]:
    """Counts per status, plus ``total`` (results as objects or as their ``to_dict`` form)."""
    statuses = [r["status"] if isinstance(r, dict) else r.status for r in results]
    return {"total": len(statuses), **{status: statuses.count(status) for status in STATUSES}}


def model_agreement(results: list[FilingResult]) -> dict[str, dict[str, int]]:
    """Per rule code, over the filings the model answered readably: how often its verdict on that code (violated
    or not) equals the rule engine's. ``{code: {"agree": n, "assessed": m}}``, codes in rule order."""
    counts: dict[str, dict[str, int]] = {}
    for r in results:
        if r.status in (ERROR, CANNOT_ASSESS) or r.model_violations is None:
            continue
        codes = {f["code"] for f in r.rule_findings if f["outcome"] != NOT_ASSESSED} | {DATA_QUALITY}
        for code in codes:
            entry = counts.setdefault(code, {"agree": 0, "assessed": 0})
            entry["assessed"] += 1
            entry["agree"] += (code in r.rule_violations) == (code in r.model_violations)
    return {code: counts[code] for code in RULE_CODES if code in counts}


def codes_text(row: dict[str, Any], key: str) -> str:
    """How a table shows ``rule_violations`` or ``model_violations`` of a result dict: the codes, ``NONE``, ``-``
    (not assessed, or no model) or ``unreadable`` (the model's answer has no readable check line)."""
    values = row[key]
    if row["status"] == ERROR:
        return "-"
    if values is None:
        return "unreadable" if key == "model_violations" and row["model_answer"] is not None else "-"
    return ", ".join(values) or "NONE"


def _not_a_file(mode: int) -> str:
    """What a ``stat`` mode is when it is not a regular file: ``"a folder"``, ``"a device"``, ... (``""`` for one)."""
    if stat.S_ISREG(mode):
        return ""
    return ("a folder" if stat.S_ISDIR(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a named pipe" if stat.S_ISFIFO(mode) else "not a regular file")


def _identity(path: Path) -> tuple[int, int] | None:
    """The device and inode of the file at ``path`` (links followed), None when it cannot be read."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def output_target(path: Path, inputs: list[Path] | tuple[Path, ...] = ()) -> Path:
    """The file that results for ``path`` are written to: ``path``, or the file that ``path``, a symbolic link into
    its own folder, points at (the link stays a link).

    Raises ``DataError`` (its message starting with ``path``) when writing would destroy something or cannot work:
    ``path`` exists and is not a regular file (a folder, a device such as ``/dev/null``, a named pipe: replacing
    it would turn it into a file); it is a symbolic link out of its folder, or a loop; it is one of the ``inputs``
    (an analysed filing); its folder does not let this user write.
    """
    path = Path(path)
    target = path
    if path.is_symlink():
        try:
            target = path.resolve()
        except (OSError, RuntimeError):
            raise DataError(f"{path} is a symbolic link loop; give the path of a JSON-lines file to write") from None
        if target.parent != path.parent.resolve():
            raise DataError(f"{path} is a symbolic link to {target}, outside {path.absolute().parent}; results are "
                            "never written through a link that leaves its folder: give the file's own path")
    try:
        kind = _not_a_file(target.stat().st_mode)
    except FileNotFoundError:
        kind = None  # a new file
    except OSError as exc:
        raise DataError(f"{path}: cannot be written ({exc.strerror or exc})") from None
    if kind:
        what = "is a folder" if kind == "a folder" else f"is {kind}, not a regular file, and is never replaced"
        raise DataError(f"{path} {what}; give the path of a JSON-lines file to write, e.g. results.jsonl")
    given = next((p for p in inputs if kind is not None and _identity(p) == _identity(target)), None)
    if given is not None:
        raise DataError(f"{path} is the input filing {given}; writing the results there would destroy it: "
                        "give another file")
    if target.parent.is_dir() and not os.access(target.parent, os.W_OK):
        raise DataError(f"{path}: cannot write in {target.parent} (permission denied)")
    return target


def write_results(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write result dicts as JSON lines, atomically: a temporary file in the same folder, replaced into place, so a
    failure leaves the old file as it was and no temporary file behind. ``DataError`` when ``path`` must not be
    written (``output_target``) or the write fails.

    Kept here rather than reusing the evaluation writer so that a rules-only run never imports torch.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    target = output_target(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n" for row in rows)
        if target.exists():
            shutil.copymode(target, tmp)  # a results file replaced keeps who may read it
        os.replace(tmp, target)
    except OSError as exc:
        raise DataError(f"{path}: cannot write the results ({exc.strerror or exc}); the file was left as it "
                        "was") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


