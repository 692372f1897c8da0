"""The rollout policy, tick by tick, with fake health figures."""

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from fleet_server.rollouts.health import Criteria, HealthSample
from fleet_server.rollouts.policy import (
    DeviceView,
    Notify,
    Operation,
    PhaseView,
    RolloutView,
    SendRollback,
    SetDevice,
    SetPhase,
    SetRollout,
    decide,
    operation_result,
)
from fleet_server.rollouts.states import DeviceStatus, PhaseState, RolloutState

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
S = DeviceStatus


@dataclass(frozen=True)
class Health:
    requests: int
    errors: int = 0
    p95_latency_ms: float | None = 5.0
    drift_score: float | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def devices(*phases: int, status: DeviceStatus = S.PENDING, **fields: object) -> tuple[DeviceView, ...]:
    return tuple(DeviceView(f"d{i}", i, phase, status, **fields) for i, phase in enumerate(phases))  # type: ignore[arg-type]


def rollout(devs: tuple[DeviceView, ...], phase: int = 0, state: RolloutState = RolloutState.RUNNING,
            phases: tuple[PhaseView, ...] | None = None, **options: object) -> RolloutView:
    phases = phases or (PhaseView(0, 10, 1.0, PhaseState.ACTIVE), PhaseView(1, 10, 1.0, PhaseState.PENDING),
                        PhaseView(2, 10, 1.0, PhaseState.PENDING))
    values: dict = {"state": state, "shadow": False, "current_phase": phase, "phases": phases, "devices": devs,
                    "criteria": Criteria(), "rate_limit_per_min": 100, "device_timeout_s": 60, "max_retries": 1,
                    "retry_backoff_s": 5}
    values.update(options)
    return RolloutView(**values)


def notified(actions: list) -> list[str]:
    return [a.device_id for a in actions if isinstance(a, Notify)]


def device_updates(actions: list) -> dict[str, DeviceStatus]:
    return {a.device_id: a.status for a in actions if isinstance(a, SetDevice)}


def rollout_states(actions: list) -> list[RolloutState]:
    return [a.state for a in actions if isinstance(a, SetRollout)]


def test_a_draft_does_nothing() -> None:
    assert decide(rollout(devices(0, 1), state=RolloutState.DRAFT), NOW) == []


def test_only_the_started_phase_is_notified_in_order() -> None:
    view = rollout(devices(1, 0, 2, 0))
    assert notified(decide(view, NOW)) == ["d1", "d3"]


def test_the_rate_limit_caps_notifications_per_minute() -> None:
    view = rollout(devices(0, 0, 0, 0), rate_limit_per_min=3, notified_last_minute=2)
    assert notified(decide(view, NOW)) == ["d0"]
    assert notified(decide(replace(view, notified_last_minute=3), NOW)) == []


def test_reports_turn_into_device_results() -> None:
    devs = (DeviceView("ok", 0, 0, S.NOTIFIED, attempts=1, agent_state="succeeded"),
            DeviceView("bad", 1, 0, S.NOTIFIED, attempts=1, agent_state="rolled_back", agent_reason="boom"),
            DeviceView("busy", 2, 0, S.NOTIFIED, attempts=1, notified_at=NOW, agent_state="downloading"))
    actions = decide(rollout(devs, criteria=Criteria(max_failure_rate=1.0)), NOW)
    assert device_updates(actions) == {"ok": S.SUCCEEDED, "bad": S.FAILED}
    failed = next(a for a in actions if isinstance(a, SetDevice) and a.device_id == "bad")
    assert failed.reason == "rolled_back: boom"


def test_a_reached_phase_bakes_then_the_next_one_starts() -> None:
    devs = devices(0, 1, 1, status=S.PENDING)
    devs = (replace(devs[0], status=S.SUCCEEDED),) + devs[1:]
    actions = decide(rollout(devs), NOW)
    assert SetPhase(0, PhaseState.BAKING) in actions
    assert notified(actions) == []

    baking = rollout(devs, phases=(PhaseView(0, 10, 1.0, PhaseState.BAKING, NOW),
                                   PhaseView(1, 10, 1.0, PhaseState.PENDING)))
    assert decide(baking, NOW + timedelta(seconds=9)) == []
    actions = decide(baking, NOW + timedelta(seconds=10))
    assert SetPhase(0, PhaseState.COMPLETED) in actions and SetPhase(1, PhaseState.ACTIVE) in actions
    assert SetRollout(RolloutState.RUNNING, current_phase=1) in actions
    assert notified(actions) == ["d1", "d2"]


def test_the_last_phase_succeeds_once_every_device_settled() -> None:
    phases = (PhaseView(0, 0, 0.5, PhaseState.BAKING, NOW),)
    devs = (DeviceView("a", 0, 0, S.SUCCEEDED), DeviceView("b", 1, 0, S.NOTIFIED, attempts=1, notified_at=NOW))
    assert rollout_states(decide(rollout(devs, phases=phases), NOW)) == []
    devs = (devs[0], replace(devs[1], status=S.TIMED_OUT))
    assert rollout_states(decide(rollout(devs, phases=phases), NOW)) == [RolloutState.SUCCEEDED]


def test_a_phase_that_can_no_longer_reach_its_threshold_aborts() -> None:
    devs = (DeviceView("a", 0, 0, S.SUCCEEDED), DeviceView("b", 1, 0, S.TIMED_OUT), DeviceView("c", 2, 1, S.PENDING))
    actions = decide(rollout(devs, phases=(PhaseView(0, 0, 0.9, PhaseState.ACTIVE), PhaseView(1, 0, 0.9,
                                                                                                 PhaseState.PENDING))),
                     NOW)
    assert device_updates(actions) == {"c": S.SKIPPED}
    assert SendRollback("a") in actions
    stop = next(a for a in actions if isinstance(a, SetRollout))
    assert stop.state is RolloutState.ROLLING_BACK and "phase 1: 1 of 2 devices succeeded" in (stop.reason or "")


def test_failures_beyond_the_rate_abort_before_the_next_phase() -> None:
    devs = (DeviceView("a", 0, 0, S.NOTIFIED, attempts=1, agent_state="rolled_back", agent_reason="HealthCheckError"),
            DeviceView("b", 1, 0, S.NOTIFIED, attempts=1, notified_at=NOW),
            DeviceView("c", 2, 1, S.PENDING), DeviceView("d", 3, 1, S.PENDING))
    actions = decide(rollout(devs), NOW)
    assert notified(actions) == []
    assert device_updates(actions) == {"a": S.FAILED, "c": S.SKIPPED, "d": S.SKIPPED}
    stop = next(a for a in actions if isinstance(a, SetRollout))
    assert stop.state is RolloutState.ROLLING_BACK  # b is still installing: it is rolled back if it succeeds
    assert "install failure rate 50% (1 of 2 devices)" in (stop.reason or "")


def test_nothing_to_roll_back_ends_aborted() -> None:
    devs = (DeviceView("a", 0, 0, S.NOTIFIED, attempts=1, agent_state="failed"), DeviceView("c", 1, 1, S.PENDING))
    actions = decide(rollout(devs), NOW)
    assert rollout_states(actions) == [RolloutState.ABORTED]


def test_without_auto_rollback_an_abort_leaves_devices_as_they_are() -> None:
    devs = (DeviceView("a", 0, 0, S.SUCCEEDED), DeviceView("b", 1, 0, S.NOTIFIED, attempts=1, agent_state="failed"))
    actions = decide(rollout(devs, criteria=Criteria(auto_rollback=False)), NOW)
    assert rollout_states(actions) == [RolloutState.ABORTED]
    assert not any(isinstance(a, SendRollback) for a in actions)


def test_a_health_regression_aborts_and_rolls_back() -> None:
    devs = (DeviceView("a", 0, 0, S.SUCCEEDED), DeviceView("b", 1, 0, S.SUCCEEDED), DeviceView("c", 2, 1, S.PENDING))
    health = {"a": HealthSample(Health(100, 0), Health(50, 20)), "b": HealthSample(Health(100, 0), Health(5, 5))}
    actions = decide(rollout(devs), NOW, health)
    stop = next(a for a in actions if isinstance(a, SetRollout))
    assert stop.state is RolloutState.ROLLING_BACK
    assert stop.reason is not None and "health regression on 1 of 1 devices" in stop.reason
    assert "a: error rate 0.0% -> 40.0%" in stop.reason  # b has too few requests to be judged
    assert [a.device_id for a in actions if isinstance(a, SendRollback)] == ["a", "b"]


def test_a_latency_regression_aborts() -> None:
    devs = (DeviceView("a", 0, 0, S.SUCCEEDED),)
    health = {"a": HealthSample(Health(100, p95_latency_ms=2.0), Health(100, p95_latency_ms=19.0))}
    reason = next(a for a in decide(rollout(devs), NOW, health) if isinstance(a, SetRollout)).reason
    assert reason is not None and "p95 latency 2.0 ms -> 19.0 ms" in reason


def test_healthy_devices_and_shadow_rollouts_pass_the_gate() -> None:
    devs = (DeviceView("a", 0, 0, S.SUCCEEDED), DeviceView("b", 1, 1, S.PENDING))
    healthy = {"a": HealthSample(Health(100, 1), Health(100, 2, p95_latency_ms=6.0))}
    assert rollout_states(decide(rollout(devs), NOW, healthy)) == []
    sick = {"a": HealthSample(Health(100), Health(100, 90))}
    assert rollout_states(decide(rollout(devs, shadow=True), NOW, sick)) == []


def test_an_unanswered_directive_is_retried_with_backoff_then_times_out() -> None:
    late = NOW - timedelta(seconds=61)
    first = (DeviceView("a", 0, 0, S.NOTIFIED, attempts=1, notified_at=late),)
    actions = decide(rollout(first), NOW)
    retry = next(a for a in actions if isinstance(a, SetDevice))
    assert (retry.status, retry.next_attempt_at) == (S.PENDING, NOW + timedelta(seconds=5))
    assert notified(actions) == []  # not before the backoff
    waiting = (DeviceView("a", 0, 0, S.PENDING, attempts=1, next_attempt_at=NOW + timedelta(seconds=5)),)
    assert notified(decide(rollout(waiting), NOW + timedelta(seconds=5))) == ["a"]

    second = (DeviceView("a", 0, 0, S.NOTIFIED, attempts=2, notified_at=late),)
    assert device_updates(decide(rollout(second), NOW)) == {"a": S.TIMED_OUT}


def test_a_late_success_still_counts() -> None:
    devs = (DeviceView("a", 0, 0, S.TIMED_OUT, attempts=2, agent_state="succeeded"),)
    assert device_updates(decide(rollout(devs), NOW)) == {"a": S.SUCCEEDED}


def test_pause_holds_notifications_and_phases_but_not_results() -> None:
    devs = (DeviceView("a", 0, 0, S.NOTIFIED, attempts=1, notified_at=NOW, agent_state="succeeded"),
            DeviceView("b", 1, 0, S.PENDING))
    actions = decide(rollout(devs, state=RolloutState.PAUSED), NOW)
    assert device_updates(actions) == {"a": S.SUCCEEDED}
    assert notified(actions) == [] and not any(isinstance(a, SetPhase) for a in actions)


def test_rolling_back_waits_for_installs_in_flight_then_finishes() -> None:
    devs = (DeviceView("a", 0, 0, S.ROLLING_BACK, rollback_attempts=1, notified_at=NOW, agent_state="rolled_back"),
            DeviceView("b", 1, 0, S.NOTIFIED, attempts=1, notified_at=NOW, agent_state="downloading"),
            DeviceView("c", 2, 1, S.PENDING))
    actions = decide(rollout(devs, state=RolloutState.ROLLING_BACK), NOW)
    assert device_updates(actions) == {"a": S.ROLLED_BACK, "c": S.SKIPPED}
    assert rollout_states(actions) == []
    devs = (replace(devs[0], status=S.ROLLED_BACK), replace(devs[1], agent_state="succeeded"),
            replace(devs[2], status=S.SKIPPED))
    actions = decide(rollout(devs, state=RolloutState.ROLLING_BACK), NOW)
    assert SendRollback("b") in actions and rollout_states(actions) == []
    devs = (devs[0], replace(devs[1], status=S.ROLLING_BACK, agent_state="rolled_back"), devs[2])
    assert rollout_states(decide(rollout(devs, state=RolloutState.ROLLING_BACK), NOW)) == [RolloutState.ROLLED_BACK]


def test_shadow_rollbacks_end_in_succeeded_drops() -> None:
    devs = (DeviceView("a", 0, 0, S.ROLLING_BACK, rollback_attempts=1, notified_at=NOW, agent_state="succeeded"),)
    actions = decide(rollout(devs, state=RolloutState.ROLLING_BACK, shadow=True), NOW)
    assert device_updates(actions) == {"a": S.ROLLED_BACK}
    assert rollout_states(actions) == [RolloutState.ROLLED_BACK]


def test_an_unanswered_rollback_is_resent_then_given_up() -> None:
    late = NOW - timedelta(seconds=61)
    devs = (DeviceView("a", 0, 0, S.ROLLING_BACK, rollback_attempts=1, notified_at=late),)
    assert SendRollback("a") in decide(rollout(devs, state=RolloutState.ROLLING_BACK), NOW)
    devs = (replace(devs[0], rollback_attempts=2),)
    actions = decide(rollout(devs, state=RolloutState.ROLLING_BACK), NOW)
    assert device_updates(actions) == {"a": S.ROLLBACK_FAILED}
    assert rollout_states(actions) == [RolloutState.ROLLED_BACK]


def test_incompatible_devices_are_in_no_phase_and_never_notified() -> None:
    devs = (DeviceView("a", 0, None, S.INCOMPATIBLE), DeviceView("b", 1, 0, S.PENDING))
    assert notified(decide(rollout(devs), NOW)) == ["b"]


@pytest.mark.parametrize(("state", "operation", "expected"), [
    (RolloutState.DRAFT, Operation.START, RolloutState.RUNNING),
    (RolloutState.RUNNING, Operation.PAUSE, RolloutState.PAUSED),
    (RolloutState.PAUSED, Operation.RESUME, RolloutState.RUNNING),
    (RolloutState.RUNNING, Operation.ABORT, RolloutState.ABORTED),
    (RolloutState.SUCCEEDED, Operation.ROLLBACK, RolloutState.ROLLING_BACK),
    (RolloutState.ABORTED, Operation.ROLLBACK, RolloutState.ROLLING_BACK),
    (RolloutState.SUCCEEDED, Operation.PAUSE, None),
    (RolloutState.RUNNING, Operation.START, None),
    (RolloutState.ROLLED_BACK, Operation.ROLLBACK, None),
    (RolloutState.DRAFT, Operation.ROLLBACK, None),
])
def test_operations(state: RolloutState, operation: Operation, expected: RolloutState | None) -> None:
    assert operation_result(state, operation) == expected
