"""The trial rules (agent.selfupdate.trial): what each start of the service does, and the records."""

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.selfupdate.trial import (
    CONFIRMED,
    ROLLED_BACK,
    StartDecision,
    Trial,
    UpdateResult,
    Verdict,
    deadline_reason,
    decide_start,
)

TRIAL = Trial(sequence=7, release="edgefleet-agent v3", version="0.2.0", candidate="b", previous="a",
              report_timeout_s=120.0, max_starts=3, starts=0)


def test_no_trial_runs_the_current_slot() -> None:
    assert decide_start(None, "a") == StartDecision(Verdict.RUN)
    assert decide_start(None, None) == StartDecision(Verdict.RUN)


@pytest.mark.parametrize("starts", [0, 1, 2])
def test_each_start_below_the_limit_is_counted_and_tried(starts: int) -> None:
    decision = decide_start(dataclasses.replace(TRIAL, starts=starts), "b")
    assert decision.verdict is Verdict.TRY and decision.reason is None
    assert decision.trial == dataclasses.replace(TRIAL, starts=starts + 1)


def test_the_start_after_the_last_allowed_one_reverts() -> None:
    decision = decide_start(dataclasses.replace(TRIAL, starts=3), "b")
    assert decision.verdict is Verdict.REVERT and decision.trial is None
    assert decision.reason == ("agent 0.2.0 in slot b was started 3 times and never reported; "
                               "slot a is current again")


@pytest.mark.parametrize("current", ["a", None])
def test_a_trial_whose_switch_never_happened_is_discarded(current: str | None) -> None:
    decision = decide_start(dataclasses.replace(TRIAL, starts=1), current)
    assert decision.verdict is Verdict.DISCARD and "did not happen" in (decision.reason or "")


def test_the_deadline_reason_names_version_slot_and_timeout() -> None:
    assert deadline_reason(dataclasses.replace(TRIAL, report_timeout_s=12.5)) == (
        "agent 0.2.0 in slot b did not connect and report within 12.5 s; slot a is current again")


@given(st.integers(0, 20), st.integers(1, 20))
def test_a_candidate_never_runs_more_often_than_allowed(starts: int, max_starts: int) -> None:
    trial: Trial | None = dataclasses.replace(TRIAL, starts=starts, max_starts=max_starts)
    tries = 0
    while trial is not None:
        decision = decide_start(trial, "b")
        if decision.verdict is not Verdict.TRY:
            assert decision.verdict is Verdict.REVERT
            break
        tries += 1
        trial = decision.trial
    assert tries == max(0, max_starts - starts)


def test_trial_and_result_round_trip() -> None:
    assert Trial.from_dict(TRIAL.to_dict()) == TRIAL
    result = UpdateResult(7, CONFIRMED, "0.2.0", "b", None, 1700000000.5)
    assert UpdateResult.from_dict(result.to_dict()) == result
    assert UpdateResult.from_dict({**result.to_dict(), "outcome": ROLLED_BACK, "reason": "x"}).reason == "x"


@pytest.mark.parametrize("change", [
    {"candidate": "c"},
    {"previous": "b"},
    {"report_timeout_s": 0},
    {"report_timeout_s": float("inf")},
    {"max_starts": 0},
    {"starts": -1},
    {"sequence": "7"},
    {"sequence": True},
    {"version": None},
])
def test_invalid_trials_are_refused(change: dict) -> None:
    with pytest.raises(ValueError):
        Trial.from_dict({**TRIAL.to_dict(), **change})


@pytest.mark.parametrize("document", [[], "x", {"sequence": 1}, {
    "sequence": 1, "outcome": "maybe", "version": "1", "slot": "a", "reason": None, "at": 1.0}])
def test_invalid_results_are_refused(document: object) -> None:
    with pytest.raises(ValueError):
        UpdateResult.from_dict(document)
