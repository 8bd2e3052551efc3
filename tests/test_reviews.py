"""Supervisors' reviews become training data: the analyze flow pauses with a typed form for each filing sent to
review, the decision is stored with the filing, and prepare_data trains on the decisions that agree with the rule
engine (train only), never on a contradicting one or a filing of the real set."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from foundation.errors import DataError
from foundation.hashing import hash_file
from regulator.generator import generate_dataset
from regulator.reviews import Decision, read_decisions, record_decision, trainable

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def filings(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("reviewed")
    generate_dataset(12, seed=31, out_dir=out)
    return sorted((out / "xbrl").iterdir())[:3]


def _decision(filing: Path, violations: list[str], rule_violations: list[str]) -> Decision:
    return Decision(filing_sha256=hash_file(filing), file=str(filing), reviewer="a.supervisor",
                    violations=violations, directive="Restore CET1.", rule_violations=rule_violations,
                    model_violations=[])


def test_store_keeps_decisions_and_flags_contradictions(filings: list[Path], tmp_path: Path) -> None:
    store = tmp_path / "reviews"
    record_decision(store, filings[0], _decision(filings[0], ["CET1_RATIO"], ["CET1_RATIO"]))
    record_decision(store, filings[1], _decision(filings[1], [], ["LEVERAGE"]))  # contradicts the rules
    record_decision(store, filings[2], _decision(filings[2], [], []))
    decisions = {d["file"]: d for d in read_decisions(store)}
    assert len(decisions) == 3 and decisions[str(filings[1])]["contradicts_rules"] is True
    assert decisions[str(filings[0])]["reviewer"] == "a.supervisor" and decisions[str(filings[0])]["reviewed_at"]
    keep, left_out = trainable(store, exclude_sha256=frozenset({hash_file(filings[2])}))
    assert [p.read_bytes() for p in keep] == [filings[0].read_bytes()]
    reasons = sorted(d["left_out"] for d in left_out)
    assert reasons[0].startswith("contradicts the rule engine") and "real set" in reasons[1]

    changed = tmp_path / "changed.xml"
    changed.write_bytes(filings[0].read_bytes())
    stale = _decision(changed, [], [])
    changed.write_bytes(filings[1].read_bytes())
    with pytest.raises(DataError, match="changed since it was analysed"):
        record_decision(store, changed, stale)
    (store / "decisions" / "broken.json").write_text("{")
    with pytest.raises(DataError, match="broken.json"):
        read_decisions(store)


def test_the_flow_asks_a_supervisor_and_prepare_data_trains_on_the_answer(filings: list[Path], tiny_model_dir: Path,
                                                                         tmp_path: Path) -> None:
    """A tiny model's answers are all sent to review: the flow pauses with the SupervisorReview form per filing;
    answered through Prefect's API (one confirming, one contradicting the rule engine), both decisions are stored;
    prepare_data then trains on the confirmed filing only (train split, listed in its provenance)."""
    from prefect.client.orchestration import get_client
    from prefect.flow_runs import resume_flow_run
    from prefect.testing.utilities import prefect_test_harness

    from flows.analyze import analyze
    from flows.finetune import finetune

    folder = tmp_path / "incoming"
    folder.mkdir()
    for f in filings[:2]:
        (folder / f.name).write_bytes(f.read_bytes())
    store = tmp_path / "reviews"
    with prefect_test_harness(server_startup_timeout=120):
        done: dict = {}
        worker = threading.Thread(target=lambda: done.update(analyze(
            folder=str(folder), model=str(tiny_model_dir), review=True, review_timeout_s=300, reviews=str(store))))
        worker.start()
        answered = []
        deadline = time.monotonic() + 240
        while len(answered) < 2:
            assert time.monotonic() < deadline and worker.is_alive(), f"no pause for review: {done}"
            with get_client(sync_client=True) as client:
                runs = [r for r in client.read_flow_runs() if r.state and r.state.is_paused()]
            if not runs:
                time.sleep(1)
                continue
            (run,) = runs
            keyset = run.state.state_details.run_input_keyset
            assert keyset and "schema" in keyset  # the typed form the UI renders
            # first filing: confirm the rule engine; second: call it compliant whatever the rules found
            confirm = not answered
            with get_client(sync_client=True) as client:
                description = client.read_flow_run_input(run.id, keyset["description"])
            answered.append(str(description))
            resume_flow_run(run.id, run_input={
                "reviewer": "a.supervisor", "directive": "As drafted.", "note": "",
                "violations": _rule_codes(folder, len(answered) - 1) if confirm else ["LIQUIDITY_COVERAGE"]})
            time.sleep(2)
        worker.join(timeout=120)
        assert not worker.is_alive() and done["needs_review"] == 2
        assert len(done["reviewed"]) == 2 and len(done["contradicting"]) == 1
        assert "Rule engine" in answered[0] and "The model's answer" in answered[0]

        overrides = {"name": "reviews", "data.reviews": str(store), "data.n_examples": 120, "data.train_balanced": 16,
                     "data.train_drills": 0, "data.train_gap_drills": 0, "eval.real_source": None}
        state = finetune(config_path=str(ROOT / "configs" / "regulator-cpu.yaml"), overrides=overrides,
                         stop_after="prepare_data", return_state=True)
    assert state.is_completed(), state.message
    figures = state.result()["stages"]["prepare_data"]["figures"]
    assert figures["provenance"]["reviews"]["rows"] == 1
    assert [r["left_out"][:27] for r in figures["reviews_left_out"]] == ["contradicts the rule engine"]
    assert sum(figures["rows"].values()) == 120 + 16 + 1


def _rule_codes(folder: Path, index: int) -> list[str]:
    """The rule engine's violations of the folder's ``index``-th filing (what a confirming supervisor submits)."""
    from regulator.analyze import assess_filings

    (result,) = assess_filings([sorted(folder.iterdir())[index]], answer=None)
    return list(result.rule_violations)


def test_the_review_form_keeps_its_labels_help_and_required_reviewer() -> None:
    """The schema the UI renders (tests/test_ui.py fills it in a browser): titles and help texts survive the
    filing's starting values (``RunInput.with_initial_data`` alone drops them), the violations start with the rule
    engine's codes, the directive with the model's, and the reviewer is required and not blank."""
    from pydantic import ValidationError

    from flows.analyze import review_form

    result = {"file": "/drop/US_1_2024-03-31.xml", "status": "needs_review", "entity": "A Bank", "form": "FFIEC 051",
              "report_date": "2024-03-31", "rule_violations": ["LEVERAGE"], "model_violations": None,
              "model_answer": "?", "model_directive": "Raise capital.", "reasons": ["model answer unreadable"]}
    form = review_form(result, 2, 3)
    schema = form.model_json_schema()
    props = schema["properties"]
    assert schema["required"] == ["reviewer"] and props["reviewer"]["minLength"] == 1
    assert [props[k]["title"] for k in ("reviewer", "violations", "directive", "note")] == [
        "Reviewer", "Violations", "Directive", "Note"]
    assert all(props[k]["description"] for k in props)
    assert props["violations"]["default"] == ["LEVERAGE"] and props["directive"]["default"] == "Raise capital."
    assert form._description.startswith("## Review 2 of 3: US_1_2024-03-31.xml")
    assert form(reviewer="a.supervisor").violations == ["LEVERAGE"]
    for blank in ("", "  "):
        with pytest.raises(ValidationError):
            form(reviewer=blank)
