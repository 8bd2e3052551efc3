"""The Prefect UI in a real (headless) browser: the flow run page of a completed deployment run shows every stage's
task run and the run's artifacts. Screenshots go to test-output/ (gitignored) for a human to look at.

The browser is Debian's chromium, installed by scripts/install-chromium.sh when missing (root, Debian registry);
Playwright drives it through ``executable_path`` (``playwright install`` is never run)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests.prefect_stack")  # before its import: its asserts report their values

from tests.prefect_stack import ROOT, STAGES, Stack

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
