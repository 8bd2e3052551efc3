"""Analysing filings: the rule engine on generated filings of both jurisdictions, hostile and foreign files among
good ones, the guardrail on hand-written and garbage model answers, the ``finetune analyze`` CLI and the flow."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from finetune.cli import main
from finetune.analysis import analyze_filings
from regulator.analyze import _measure_reasons, analyze_report, expand_paths, model_check_lines, quoted_figures
from regulator.answers import parse_answer
from regulator.generator import generate_dataset
from regulator.render import render_target
from regulator.rules import evaluate_rules
from regulator.xbrl import parse_xbrl_file

# Seed 3 gives, among 24 filings: EU and US compliant, near-miss, single and multi breaches, an EU data-quality case
# with inconsistent figures and a US one with a missing fact.
SEED = 0  # 24 filings of every case kind, one not assessable, none that warns on parsing
FOREIGN = """<?xml version="1.0" encoding="utf-8"?>
<xbrli:xbrl xmlns:xbrli="http://www.xbrl.org/2003/instance" xmlns:link="http://www.xbrl.org/2003/linkbase"
  xmlns:xlink="http://www.w3.org/1999/xlink" xmlns:iso4217="http://www.xbrl.org/2003/iso4217"
  xmlns:us-gaap="http://fasb.org/us-gaap/2024">
<link:schemaRef xlink:type="simple" xlink:href="https://xbrl.fasb.org/us-gaap/2024/elts/us-gaap-2024.xsd"/>
<xbrli:context id="c1"><xbrli:entity><xbrli:identifier scheme="http://www.sec.gov/CIK">0000070858</xbrli:identifier>
</xbrli:entity><xbrli:period><xbrli:instant>2024-12-31</xbrli:instant></xbrli:period></xbrli:context>
<xbrli:unit id="usd"><xbrli:measure>iso4217:USD</xbrli:measure></xbrli:unit>
<us-gaap:Assets contextRef="c1" unitRef="usd" decimals="-6">3261000000000</us-gaap:Assets>
</xbrli:xbrl>
"""


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """24 generated filings (both jurisdictions) and their rule-engine labels."""
    out = tmp_path_factory.mktemp("filings")
    df = generate_dataset(24, SEED, out)
    assert set(df.case_kind) == {"compliant", "near_miss", "single_breach", "multi_breach", "data_quality"}
    assert set(df.jurisdiction) == {"EU", "US"}
    return out / "xbrl", df


@pytest.fixture(scope="module")
def mixed(generated: tuple[Path, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated filings plus a filing of another taxonomy and a truncated (corrupt) one, in one folder."""
    folder = tmp_path_factory.mktemp("mixed")
    shutil.copytree(generated[0], folder, dirs_exist_ok=True)
    (folder / "sec_10k.xml").write_text(FOREIGN, encoding="utf-8")
    good = sorted(folder.glob("US_*.xml"))[0].read_text()
    (folder / "corrupt.xbrl").write_text(good[: len(good) // 2], encoding="utf-8")
    return folder


def _row(df: pd.DataFrame, **where: str) -> pd.Series:
    sel = df
    for column, value in where.items():
        sel = sel[sel[column] == value]
    return sel.iloc[0]


def _by_name(results: list) -> dict:
    return {Path(r.file).name: r for r in results}


# ---------------------------------------------------------------------------------------------------------------
# Rule engine alone


def test_rules_only_matches_the_labels_and_isolates_bad_files(mixed: Path, generated) -> None:
    _, df = generated
    results = _by_name(analyze_filings([mixed], model_dir=None))
    assert len(results) == len(df) + 2
    for row in df.itertuples():
        r = results[Path(row.source_file).name]
        assert r.rule_violations == list(row.violations), row.source_file
        assert r.model_violations is None and r.model_answer is None
        if "not reported" in row.report_text or " nil" in row.report_text:  # a fact the rules need: no guess
            assert r.status == "cannot_assess" and r.reasons[0].startswith("cannot assess: missing")
        elif r.reasons:  # a data-quality case whose parse warned (a ratio x100 its components): a human looks
            assert row.case_kind == "data_quality" and r.status == "needs_review", (row.source_file, r.reasons)
            assert all(reason.startswith("parser warning: ") for reason in r.reasons), r.reasons
        else:
            assert r.status == "ok"
        assert r.jurisdiction == row.jurisdiction and r.report_date == row.report_date
        assert (r.pca_category is None) == (row.jurisdiction == "EU")  # PCA reads ratios only
    foreign, corrupt = results["sec_10k.xml"], results["corrupt.xbrl"]
    assert foreign.status == "error" and "unsupported taxonomy" in foreign.reasons[0]
    assert corrupt.status == "error" and "not well-formed XML" in corrupt.reasons[0]


def test_data_quality_near_miss_and_key_figures_are_surfaced(generated) -> None:
    folder, df = generated
    inconsistent = df[df["target"].str.contains("disagrees with its components")].iloc[0]
    r = analyze_filings([Path(inconsistent.source_file)], model_dir=None)[0]
    assert r.status == "ok" and r.rule_violations == list(inconsistent.violations)
    assert "DATA_QUALITY" in r.rule_violations
    assert any(f["outcome"] == "DATA_QUALITY" and "vs components" in f["description"] for f in r.rule_findings)
    eu = analyze_filings([Path(_row(df, case_kind="compliant", jurisdiction="EU").source_file)], model_dir=None)[0]
    assert eu.key_figures["C 03.00 r0010 c0010"]["unit"] == "pure"
    assert eu.key_figures["C 01.00 r0020 c0010"]["unit"] == "EUR"
    near = _row(df, case_kind="near_miss", jurisdiction="US")
    r = analyze_filings([Path(near.source_file)], model_dir=None)[0]
    assert r.status == "ok" and r.rule_violations == []
    assert any(f["margin"] is not None and f["margin"] < 0.005 for f in r.rule_findings)
    assert r.key_figures["RCOAP859"]["unit"] == "USD" and r.key_figures["RCOAP793"]["display"].endswith("%")
    json.dumps(r.to_dict(), allow_nan=False)  # JSON-able


def test_a_missing_rule_figure_cannot_be_assessed(generated, tmp_path: Path) -> None:
    _, df = generated
    row = _row(df, case_kind="compliant", jurisdiction="US")
    text = re.sub(r"<cc:RC[OF]A7204 [^>]*>[^<]*</cc:RC[OF]A7204>", "", Path(row.source_file).read_text())
    (tmp_path / "no_leverage.xml").write_text(text)
    r = analyze_filings([tmp_path / "no_leverage.xml"], model_dir=None)[0]
    assert r.status == "cannot_assess"
    assert r.reasons == ["cannot assess: missing leverage ratio (RCOA7204, not reported) — needed by LEVERAGE"]


def test_missing_paths_and_empty_folders_are_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    files, errors = expand_paths([tmp_path / "nope.xml", tmp_path / "empty"])
    assert files == []
    assert [e.status for e in errors] == ["error", "error"]
    assert "no such file" in errors[0].reasons[0] and "no *.xml, *.xbrl or *.zip" in errors[1].reasons[0]


# ---------------------------------------------------------------------------------------------------------------
# The guardrail on hand-written answers


def test_a_correct_answer_is_ok_and_rounding_to_the_displayed_precision_is_allowed(generated) -> None:
    _, df = generated
    for row in df.itertuples():
        parsed = parse_xbrl_file(Path(row.source_file))
        r = analyze_report(parsed, row.target)
        if r.status != "cannot_assess":
            assert (r.status, r.reasons) == ("ok", []), (row.source_file, r.reasons)
        assert r.model_violations == list(row.violations)
    row = _row(df, case_kind="single_breach", jurisdiction="US")
    figure = re.search(r"- CET1_RATIO (\d+\.\d\d)%", row.target).group(1)
    rounded = row.target.replace(f"CET1_RATIO {figure}%", f"CET1_RATIO {float(figure):.1f}%", 1)
    assert analyze_report(parse_xbrl_file(Path(row.source_file)), rounded).status == "ok"


def test_a_wrong_figure_is_named(generated) -> None:
    _, df = generated
    row = _row(df, case_kind="multi_breach", jurisdiction="EU")
    figure = re.search(r"- T1_RATIO (\d+\.\d\d)%", row.target).group(1)
    wrong = f"{float(figure) + 0.37:.2f}%"
    answer = row.target.replace(f"T1_RATIO {figure}%", f"T1_RATIO {wrong}", 1)
    r = analyze_report(parse_xbrl_file(Path(row.source_file)), answer)
    assert r.status == "needs_review"
    assert r.reasons == [f"model's T1_RATIO line quotes {wrong}, a figure not in the filing"]
    # A figure of the filing quoted for the wrong rule is caught too.
    lcr = re.search(r"- LCR (\d+\.\d\d)%", row.target).group(1)
    answer = row.target.replace(f"T1_RATIO {figure}%", f"T1_RATIO {lcr}%", 1)
    r = analyze_report(parse_xbrl_file(Path(row.source_file)), answer)
    assert r.status == "needs_review" and "reports for LCR (C 76.00 r0030 c0010)" in r.reasons[0]


def test_violation_disagreements_are_named(generated) -> None:
    _, df = generated
    row = _row(df, case_kind="multi_breach", jurisdiction="EU")
    parsed = parse_xbrl_file(Path(row.source_file))
    code = next(c for c in row.violations if c != "DATA_QUALITY")
    missed = re.sub(rf"(- {code} [^\n]*): BREACH", r"\1: OK", row.target, count=1)
    r = analyze_report(parsed, missed)
    assert r.status == "needs_review"
    assert f"model missed {code} (its check line says OK)" in r.reasons
    compliant = _row(df, case_kind="compliant", jurisdiction="EU")
    extra = re.sub(r"(- LCR [^\n]*): OK", r"\1: BREACH", compliant.target, count=1)
    r = analyze_report(parse_xbrl_file(Path(compliant.source_file)), extra)
    assert "model reported LCR which the rules do not find" in r.reasons and r.status == "needs_review"
    r = analyze_report(parsed, "The bank looks fine to me. 12.5%")
    assert r.status == "needs_review" and "no readable check line" in r.reasons[0]


def test_a_looping_answer_without_a_directive_is_sent_to_review(generated) -> None:
    """A model that loops repeats check lines until its token bound and never writes the directive (seen in a
    demo): both are named, even when every line it wrote is right."""
    _, df = generated
    row = _row(df, case_kind="compliant", jurisdiction="EU")
    analysis = row.target.split("\nDIRECTIVE:")[0]
    lcr = next(line for line in analysis.splitlines() if line.startswith("- LCR "))
    r = analyze_report(parse_xbrl_file(Path(row.source_file)), analysis + ("\n" + lcr) * 3)
    assert r.status == "needs_review"
    assert r.reasons == ["model's analysis repeats check lines (LCR 4 times): the answer is degenerate",
                         "model answer has no directive (no DIRECTIVE: section, or an empty one)"]


def test_each_finding_needs_its_rules_measure_and_only_findings_have_one(generated) -> None:
    """A measure follows each BREACH or data-quality line and is the rule's own; a missing, misplaced or wrong
    measure is named, even when every check line is right."""
    _, df = generated
    row = _row(df, case_kind="single_breach")
    parsed = parse_xbrl_file(Path(row.source_file))
    lines = row.target.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("  measure: "))
    code = lines[at - 1].split()[1]
    assert analyze_report(parsed, row.target).status == "ok"
    r = analyze_report(parsed, "\n".join(lines[:at] + lines[at + 1:]))
    assert r.reasons[0] == f"model's {code} finding has no measure line"
    # a single-breach answer: without its one measure, its closing now calls for measures it does not write
    assert r.reasons[1:] == [] or r.reasons[1].startswith("model's closing calls for measures it did not write")
    wrong = "  measure: reduce the large exposure below the limit (CRR Art 395(1) and 396(1)) within 30 days"
    r = analyze_report(parsed, "\n".join(lines[:at] + [wrong] + lines[at + 1:]))
    assert len(r.reasons) == 1 and r.reasons[0].startswith(f"model's {code} measure is not the rule's")
    ok_at = next(i for i, line in enumerate(lines) if line.endswith(": OK"))
    r = analyze_report(parsed, "\n".join(lines[:ok_at + 1] + [lines[at]] + lines[ok_at + 1:]))
    assert f"model writes a measure under {lines[ok_at].split()[1]}, which it does not find" in r.reasons


def test_figures_are_read_with_units_and_codes_are_not_figures() -> None:
    figures, unreadable = quoted_figures("CET1 (RCOAP859) 1,430m vs C 01.00 r0020 c0010 -0.49% (CRR Art 92(1)(a))")
    assert [(f.text, f.is_ratio) for f in figures] == [("1,430m", False), ("-0.49%", True)]
    assert figures[0].value == 1.43e9 and unreadable == []
    assert quoted_figures("Tier 1 ratio7.39%")[1] == ["ratio7.39%"]


# ---------------------------------------------------------------------------------------------------------------
# The tiny model (garbage answers)


def test_tiny_model_answers_are_never_trusted(mixed: Path, tiny_model_dir: Path) -> None:
    import torch

    torch.set_num_threads(2)
    calls: list[tuple[str, int, int]] = []
    results = analyze_filings([mixed], model_dir=tiny_model_dir, batch_size=8, max_new_tokens=6,
                              progress=lambda *a: calls.append(a))
    readable = [r for r in results if r.status != "error"]
    assert len(readable) == 24 and len(results) == 26
    for r in readable:
        assert isinstance(r.model_answer, str) and r.model_violations is None  # no readable verdict
        assert r.status in ("needs_review", "cannot_assess") and r.reasons
    assert ("generate", 24, 24) in calls and ("read", 26, 26) in calls


# ---------------------------------------------------------------------------------------------------------------
# CLI


def test_cli_exit_codes_and_json(mixed: Path, generated, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["analyze", str(mixed), "--rules-only", "--json"]) == 1
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 26 and {r["status"] for r in rows} == {"ok", "cannot_assess", "error"}
    assert re.search(r"error: .*sec_10k\.xml: .*unsupported taxonomy", err)
    assert re.search(r"error: .*corrupt\.xbrl: .*not well-formed", err)

    out_file = tmp_path / "results.jsonl"
    assert main(["analyze", str(generated[0]), "--rules-only", "--out", str(out_file)]) == 0
    out, _ = capsys.readouterr()
    assert out.splitlines()[0].split() == ["file", "status", "rule", "violations", "model", "violations"]
    assert "24 filings: 23 ok, 0 needs_review, 1 cannot_assess, 0 error (rules only)" in out
    assert len(out_file.read_text().splitlines()) == 24


def test_cli_without_a_production_model_says_what_to_do(generated, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "registry").mkdir()  # an existing, empty registry (a missing one is its own error)
    assert main(["analyze", str(generated[0]), "--registry", str(tmp_path / "registry")]) == 2
    err = capsys.readouterr().err
    assert "no production model" in err and "--rules-only" in err and "--model" in err


def test_cli_uses_the_production_model(generated, tiny_model_dir: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    from finetune.registry import promote

    registry = tmp_path / "registry"
    version = promote(registry, tiny_model_dir, card={"metrics": {}})
    files = sorted(generated[0].glob("*.xml"))[:2]
    code = main(["analyze", *map(str, files), "--registry", str(registry), "--json", "--max-new-tokens", "4"])
    out, err = capsys.readouterr()
    assert code == 0 and version in err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["status"] for r in rows] == ["needs_review", "needs_review"]
    assert all(isinstance(r["model_answer"], str) for r in rows)
    # An HF folder works as --model too.
    assert main(["analyze", str(files[0]), "--model", str(tiny_model_dir), "--max-new-tokens", "2"]) == 0
    out = capsys.readouterr().out
    assert "needs_review" in out and "unreadable" in out


def test_analyze_decodes_as_the_gate_judged_the_model(generated, tiny_model_dir: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    from finetune.analysis import evaluated_constrained
    from finetune.registry import promote

    registry = tmp_path / "registry"
    judged = promote(registry, tiny_model_dir, card={"metrics": {}, "config": {"eval": {"constrain_heads": True}}})
    assert evaluated_constrained(registry / "versions" / judged)
    assert not evaluated_constrained(tiny_model_dir)  # a plain folder has no card: free
    file = str(sorted(generated[0].glob("*.xml"))[0])
    common = [file, "--registry", str(registry), "--json", "--max-new-tokens", "2"]
    assert main(["analyze", *common]) == 0
    assert "check-line heads constrained" in capsys.readouterr().err
    assert main(["analyze", *common, "--free-heads"]) == 0
    assert "check-line heads free" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["analyze", *common, "--free-heads", "--constrain-heads"])


# ---------------------------------------------------------------------------------------------------------------
# Flow


def test_flow_rules_only(generated) -> None:
    from prefect.artifacts import Artifact
    from prefect.testing.utilities import prefect_test_harness

    from flows.analyze import analyze

    with prefect_test_harness(server_startup_timeout=120):
        summary = analyze(folder=str(generated[0]), rules_only=True)
        artifact = Artifact.get("analysis-results")
    assert artifact is not None and artifact.type == "table" and len(json.loads(artifact.data)) == 24
    assert {k: summary[k] for k in ("total", "ok", "needs_review", "cannot_assess", "error")} == {
        "total": 24, "ok": 23, "needs_review": 0, "cannot_assess": 1, "error": 0}
    assert summary["model"] == "rules-only"
    assert len(Path(summary["results"]).read_text().splitlines()) == 24


def test_flow_answers_with_the_shadow_beside_production(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The analyze flow with the production model and a shadow in the registry (gate.shadow): production's answers
    are the results; the shadow answered the same filings (shadow_results.jsonl beside them) and its standing is in
    the summary (a random tiny model's unreadable answers count for neither)."""
    import shutil

    from prefect.testing.utilities import prefect_test_harness

    from finetune.registry import production_version, promote
    from flows.analyze import analyze
    from tests.test_registry import CARD, _variant

    reg = tmp_path / "registry"
    v1 = promote(reg, tiny_model_dir, card=CARD)
    v2 = promote(reg, _variant(tiny_model_dir, tmp_path / "m2", 0.5), card=CARD, shadow=True, shadow_min_filings=1)
    folder = tmp_path / "quarter"
    folder.mkdir()
    real = Path(__file__).parent / "fixtures" / "real" / "ffiec"
    for name in ("bank-493741-2026-06-30.xml", "bank-946274-2026-06-30.xml"):
        shutil.copyfile(real / name, folder / name)
    with prefect_test_harness(server_startup_timeout=120):
        summary = analyze(folder=str(folder), registry_dir=str(reg))
    assert summary["total"] == 2 and summary["shadow"]["version"] == v2 and not summary["shadow"]["ready"]
    results = Path(summary["results"])
    shadow = results.with_name("shadow_results.jsonl").read_text().splitlines()
    assert len(shadow) == 2 and len(results.read_text().splitlines()) == 2
    assert production_version(reg) == v1


def test_an_answer_states_the_rules_a_package_cannot_give(tmp_path: Path) -> None:
    """xBRL-CSV packages carry no C 28.00 (an open table without a DPM datapoint): their reference answers state
    the large exposure not assessed; such an answer is ok, one that leaves the line out is sent for review."""
    from regulator.packages import read_zip

    df = generate_dataset(8, SEED, tmp_path, eu_fraction=1.0, eu_csv_fraction=1.0)
    row = df.iloc[0]
    assert "- LARGE_EXPOSURE not mapped vs 25% limit: NOT_ASSESSED" in row.target
    (parsed,) = read_zip(Path(row.source_file))
    # the package's own reasons (C 28.00 not assessed, the 4.0 cells not mapped) and nothing about the answer
    assert analyze_report(parsed, row.target).reasons == analyze_report(parsed).reasons
    left_out = "\n".join(line for line in row.target.splitlines() if "NOT_ASSESSED" not in line)
    assert "model's analysis has no check line for LARGE_EXPOSURE" in analyze_report(parsed, left_out).reasons


def test_a_missing_figure_calls_for_the_report_to_be_completed_not_the_rules_remedy() -> None:
    """A rule line whose figure the filing leaves out is a data-quality finding: its measure is the report's
    correction, never the rule's remedy (real 031 extract of RSSD 451965: no conservation buffer item RCOAH311, so
    no capital conservation plan is ordered for it). The reference says so, and the review holds a model to it."""
    real = Path(__file__).parent / "fixtures" / "real" / "ffiec" / "bank-451965-2026-06-30.xml"
    parsed = parse_xbrl_file(real)
    result = evaluate_rules(parsed)
    target = render_target(parsed, result, "formal_notice")
    lines = target.splitlines()
    at = lines.index("- COMBINED_BUFFER not reported vs 2.5% min: DATA_QUALITY")
    dq_measure = "  measure: correct or complete the reported figures and resubmit the report (12 U.S.C. 1817(a))" \
                 " within 10 days"
    assert lines[at + 1] == dq_measure
    assert "capital conservation plan" not in target
    review = _measure_reasons(parsed, model_check_lines(target), parse_answer(target))
    assert review == []
    plan = "  measure: submit a capital conservation plan and restrict distributions (12 CFR 324.11) within 7 days"
    wrong = "\n".join(lines[:at + 1] + [plan] + lines[at + 2:])
    reasons = _measure_reasons(parsed, model_check_lines(wrong), parse_answer(wrong))
    assert len(reasons) == 1 and reasons[0].startswith("model's COMBINED_BUFFER measure is not the rule's")


def test_the_closing_must_agree_with_the_measures_and_name_the_bank() -> None:
    """Seen on real-derived filings (bench/NOTES.md lever 37): five measures, then `Escalation for 451965: no measure
    is required.`, or a closing addressed to `CET1 capital`. The reference closings never trip it; these are named."""
    from regulator.render import DUE_PHRASE, TEMPLATE_FAMILIES

    assert all(DUE_PHRASE in due.lower() and DUE_PHRASE not in none.lower() for due, none in TEMPLATE_FAMILIES.values())
    real = Path(__file__).parent / "fixtures" / "real" / "ffiec" / "bank-451965-2026-06-30.xml"
    parsed = parse_xbrl_file(real)
    result = evaluate_rules(parsed)
    for family in TEMPLATE_FAMILIES:
        target = render_target(parsed, result, family)
        assert not [r for r in analyze_report(parsed, target).reasons if "closing" in r], family
    analysis = render_target(parsed, result, "escalation").split("\nDIRECTIVE:")[0]
    reasons = analyze_report(parsed, analysis + "\nDIRECTIVE: Escalation for 451965: no measure is required.").reasons
    assert [r for r in reasons if "closing" in r] == [
        "model's closing does not call for the 2 measure(s) it wrote ('Escalation for 451965: no measure is required.')"]
    reasons = analyze_report(parsed, analysis + "\nDIRECTIVE: Escalation for CET1 capital: the measures above are due "
                                                "within their time limits.").reasons
    assert [r for r in reasons if "closing" in r] == [
        "model's closing is not addressed to 451965 ('Escalation for CET1 capital: the measures above are due within "
        "their time limits.')"]
