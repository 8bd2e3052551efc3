"""The Prefect UI in a real (headless) browser: the flow run page of a completed deployment run shows every stage's
task run and the run's artifacts; a supervisor answers a paused analysis's review form (Resume) and the decision
reaches the review store; the Artifacts page shows the registry's history after switches by hand. Screenshots go to
test-output/ (gitignored) for a human to look at.

The browser is Debian's chromium, installed by scripts/install-chromium.sh when missing (root, Debian registry);
Playwright drives it through ``executable_path`` (``playwright install`` is never run)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests.prefect_stack")  # before its import: its asserts report their values

from tests.prefect_stack import FINAL, ROOT, STAGES, Stack

pytest_plugins = ["tests.prefect_stack"]
pytestmark = [pytest.mark.server, pytest.mark.timeout(1500)]

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
OUT = ROOT / "test-output"
ARTIFACTS = ("audit-report", "train-full-progress", "comparison", "gate-decision")


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        done = subprocess.run(["bash", str(ROOT / "scripts" / "install-chromium.sh")], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"chromium is not installed and could not be installed: {done.stderr.strip()[-300:]}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def test_flow_run_page_shows_stages_and_artifacts(stack: Stack, completed_run: str, browser) -> None:
    OUT.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(f"{stack.ui_url}/runs/flow-run/{completed_run}", wait_until="networkidle", timeout=120_000)
    page.get_by_text("Completed", exact=True).first.wait_for()
    page.wait_for_timeout(3000)  # the run graph is a canvas: give it time to draw the stage nodes
    page.screenshot(path=str(OUT / "flow-run-graph.png"))

    page.get_by_role("button", name="Task Runs").or_(page.get_by_text("Task Runs", exact=True)).first.click()
    page.get_by_role("tabpanel", name="Task Runs").get_by_text(f"{len(STAGES)} Task runs").wait_for()
    page.get_by_role("tabpanel", name="Task Runs").get_by_text(f"{len(STAGES)} Completed").first.wait_for()
    for stage in STAGES:
        page.get_by_role("link", name=f"{stage}-").first.wait_for()
    page.screenshot(path=str(OUT / "flow-run-task-runs.png"), full_page=True)

    page.set_viewport_size({"width": 1400, "height": 2000})
    page.get_by_text("Artifacts", exact=True).first.click()
    for key in ARTIFACTS:
        page.get_by_text(key, exact=True).first.wait_for()
    page.screenshot(path=str(OUT / "flow-run-artifacts.png"), full_page=True)
    page.close()


def _form_field(page, dialog, title: str):
    """A field of the Prefect UI's schema form by its label (the title of the RunInput field; "(Optional)" is added
    to fields with a default). The labels are not tied to their inputs (``for`` names no element): no get_by_label."""
    label = page.locator(".schema-form-property__label", has_text=re.compile(rf"^{re.escape(title)}( \(Optional\))?$"))
    return dialog.locator(".schema-form-property").filter(has=label)


REVIEWER, DIRECTIVE = "a.supervisor", "Restore leverage and CET1 within 90 days."
NOTE = "CET1 breaches once the netted deduction is added."


def test_supervisor_answers_the_review_form_in_the_browser(stack: Stack, tiny_model_dir: Path, browser,
                                                           tmp_path: Path) -> None:
    """The analyze deployment (analyze/quarterly, review on) pauses for the filing the tiny model's answer sends to
    review. In the browser the supervisor opens the paused run, presses Resume, sees the filing's summary and the
    form (violations starting with the rule engine's codes), adds a code, writes the directive and a note, signs and
    submits; the run completes and the decision typed in the browser is in the review store, flagged as
    contradicting the rule engine."""
    from foundation.hashing import hash_file
    from regulator.analyze import RULE_CODES, assess_filings
    from regulator.generator import generate_dataset
    from regulator.reviews import read_decisions

    generate_dataset(4, seed=31, out_dir=tmp_path / "generated")
    filing = next(f for f in sorted((tmp_path / "generated" / "xbrl").iterdir())
                  if assess_filings([f], answer=None)[0].rule_violations)
    folder, store = tmp_path / "incoming", tmp_path / "reviews"
    folder.mkdir()
    (folder / filing.name).write_bytes(filing.read_bytes())
    rule_codes = list(assess_filings([folder / filing.name], answer=None)[0].rule_violations)
    added = next(code for code in RULE_CODES if code not in rule_codes)

    run_id = stack.run_with_params("analyze/quarterly", {
        "folder": str(folder), "model": str(tiny_model_dir), "review": True, "review_timeout_s": 300,
        "reviews": str(store)})
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(60_000)
    try:
        run = stack.wait(run_id, timeout=300, until={"PAUSED", *FINAL})
        assert run.state.type.value == "PAUSED", f"{run.state.name}: {run.state.message}\n{stack.worker_log_tail()}"
        OUT.mkdir(exist_ok=True)
        page.goto(f"{stack.ui_url}/runs/flow-run/{run_id}", wait_until="networkidle", timeout=120_000)
        page.get_by_text("Paused", exact=True).first.wait_for()
        dialog = page.get_by_role("dialog")
        page.get_by_role("button", name="Resume").first.click()
        dialog.get_by_role("button", name="Submit").click()  # unsigned: refused in the form, nothing resumes
        dialog.get_by_text("'reviewer' is a required property").wait_for()
        dialog.get_by_role("button", name="Close").click()
        dialog.wait_for(state="hidden")

        page.get_by_role("button", name="Resume").first.click()  # a fresh form
        dialog.get_by_text(f"Review 1 of 1: {filing.name}").wait_for()
        dialog.get_by_text("Sent to review because:").wait_for()
        reviewer, violations, directive, note = (_form_field(page, dialog, t) for t in
                                                 ("Reviewer", "Violations", "Directive", "Note"))
        assert reviewer.locator(".schema-form-property__label").inner_text() == "Reviewer"  # required
        violations.get_by_text("No item: the filing is compliant", exact=False).wait_for()  # the help text
        assert [t.input_value() for t in violations.locator("textarea").all()] == rule_codes
        reviewer.locator("textarea").fill(REVIEWER)
        violations.get_by_role("button", name="Add item").click()
        violations.locator("textarea").last.fill(added)
        directive.locator("textarea").fill(DIRECTIVE)
        note.locator("textarea").fill(NOTE)
        note.scroll_into_view_if_needed()
        page.screenshot(path=str(OUT / "review-form.png"))
        dialog.get_by_role("button", name="Submit").click()
        dialog.wait_for(state="hidden")

        run = stack.wait(run_id, timeout=180)
        assert run.state.type.value == "COMPLETED", f"{run.state.name}: {run.state.message}\n{stack.worker_log_tail()}"
        page.set_viewport_size({"width": 1400, "height": 1800})  # header, run graph and every log line
        page.get_by_text("Completed", exact=True).first.wait_for()
        page.get_by_text(f"{REVIEWER} decided").first.wait_for()
        page.screenshot(path=str(OUT / "review-submitted.png"))
    finally:
        page.close()
        if stack.flow_run(run_id).state.type.value not in FINAL:  # a failed step leaves no paused process behind
            from prefect.states import Cancelling

            stack.call(lambda c: c.set_flow_run_state(run_id, Cancelling(), force=True))  # the worker stops it

    (decision,) = read_decisions(store)
    assert decision["reviewer"] == REVIEWER and decision["filing_sha256"] == hash_file(folder / filing.name)
    assert decision["violations"] == sorted([*rule_codes, added]) and decision["rule_violations"] == rule_codes
    assert decision["directive"] == DIRECTIVE and decision["note"] == NOTE and decision["contradicts_rules"] is True


def test_registry_history_artifact_after_switches_by_hand(stack: Stack, tiny_model_dir: Path, browser,
                                                          tmp_path: Path) -> None:
    """Two versions promoted into the stack's registry; an operator promotes the older one back with
    ``finetune registry promote``, another rolls back with ``finetune registry rollback``. Each switch publishes the
    ``registry-history`` artifact on the stack's server: the Artifacts page shows its latest version, newest switch
    first, with the users and reasons typed on the command line."""
    from safetensors.torch import load_file, save_file

    from finetune.registry import promote

    registry = stack.finetune_home / "registry"  # the CLI's default under the stack's FINETUNE_HOME
    versions = []
    for scale in (0.71, 0.73):  # weights no other test promotes: two new versions
        model = tmp_path / f"model-{scale}"
        shutil.copytree(tiny_model_dir, model)
        weights = load_file(model / "model.safetensors")
        save_file({k: v * scale for k, v in weights.items()}, model / "model.safetensors", metadata={"format": "pt"})
        versions.append(promote(registry, model, card={"metrics": {"f1_micro": scale}},
                                reason=f"deployment gate passed (UI test, weights x{scale})"))
    older, newer = versions
    promoted_why, rolled_back_why = "the newer model misreads CBLR electors", "the CBLR fix is in the newer model"

    def finetune_registry(user: str, *args: str) -> None:
        done = subprocess.run([str(ROOT / ".venv" / "bin" / "finetune"), "registry", *args],
                              env={**stack.env, "LOGNAME": user, "USER": user}, cwd=ROOT, capture_output=True,
                              text=True, timeout=180)
        assert done.returncode == 0 and "registry-history artifact updated" in done.stdout, done.stdout + done.stderr

    finetune_registry("a.operator", "promote", older, "--reason", promoted_why)
    finetune_registry("b.operator", "rollback", "--reason", rolled_back_why)

    OUT.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.set_default_timeout(60_000)
    try:
        page.goto(f"{stack.ui_url}/artifacts", wait_until="networkidle", timeout=120_000)
        page.get_by_text("registry-history", exact=True).first.click()
        page.wait_for_url(re.compile(r"/artifacts/key/registry-history"))
        page.locator("a[href*='/artifacts/artifact/']").first.click()  # the timeline's newest version
        page.get_by_text(f"rollback to {newer} by b.operator").first.wait_for()  # the CLI's flow run
        rows = page.get_by_role("table").get_by_role("row")
        rows.filter(has_text=f"rollback: {rolled_back_why}").wait_for()
        newest, before = rows.nth(1).inner_text(), rows.nth(2).inner_text()  # row 0: the header
        assert "b.operator" in newest and f"rollback: {rolled_back_why}" in newest and newer in newest, newest
        assert "a.operator" in before and promoted_why in before and older in before, before
        page.wait_for_load_state("networkidle")
        page.wait_for_timeout(1500)  # the route's fade-in: a screenshot at once is dimmed
        page.screenshot(path=str(OUT / "registry-history.png"), full_page=True)
    finally:
        page.close()
