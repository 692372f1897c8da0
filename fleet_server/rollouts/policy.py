"""The rollout policy: from a rollout's persisted state, the devices' reports,
their health and the time, the actions to take. Pure: no I/O, no clock.

One tick of ``decide``:

1. Reports: a notified device whose directive reached a final state becomes
   succeeded or failed (failed, rolled back by itself, rejected); a device
   that timed out and then succeeded after all counts as succeeded; a
   rollback reaching its final state ends rolled_back or rollback_failed.
2. Timeouts: a directive unanswered for ``device_timeout_s`` is retried
   after an exponential backoff (``retry_backoff_s``, doubling) up to
   ``max_retries`` times (while the rollout runs or is paused); then the
   device is timed_out. Offline devices are notified and pending until then.
3. Running or paused: the abort criteria, continuously. The install failure
   rate counts failed devices against every device released to so far; the
   health gate compares each succeeded device with its own baseline
   (``fleet_server.rollouts.health``). A tripped criterion aborts with the
   reason, skips the devices not yet notified and, with ``auto_rollback``,
   rolls back every device that took the release.
4. Running only: phases. A phase is reached when ``success_threshold`` of
   the devices in it and the phases before it succeeded (or can no longer:
   then the rollout aborts); it bakes for ``bake_s`` while the gates watch,
   then the next phase starts. After the last one the rollout succeeds once
   every device reached a final state. Devices of started phases are
   notified in order, at most ``rate_limit_per_min`` per minute.
5. Rolling back: rollback directives (shadow rollouts: drop directives) go to
   every device that took the release, including ones that finish their
   install later; when none is outstanding the rollout is rolled_back (or
   aborted, when no device had taken the release).
"""

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from fleet_server.rollouts.health import Criteria, HealthSample, judged, regression
from fleet_server.rollouts.states import DeviceStatus, PhaseState, RolloutState

AGENT_FINAL = frozenset({"succeeded", "failed", "rolled_back", "rejected"})
SETTLED = frozenset({DeviceStatus.SUCCEEDED, DeviceStatus.FAILED, DeviceStatus.TIMED_OUT,
                     DeviceStatus.INCOMPATIBLE, DeviceStatus.SKIPPED, DeviceStatus.ROLLED_BACK,
                     DeviceStatus.ROLLBACK_FAILED})


class Operation(enum.StrEnum):
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"
    ROLLBACK = "rollback"


OPERATIONS: dict[tuple[RolloutState, Operation], RolloutState] = {
    (RolloutState.DRAFT, Operation.START): RolloutState.RUNNING,
    (RolloutState.RUNNING, Operation.PAUSE): RolloutState.PAUSED,
    (RolloutState.PAUSED, Operation.RESUME): RolloutState.RUNNING,
    (RolloutState.DRAFT, Operation.ABORT): RolloutState.ABORTED,
    (RolloutState.RUNNING, Operation.ABORT): RolloutState.ABORTED,
    (RolloutState.PAUSED, Operation.ABORT): RolloutState.ABORTED,
    **{(state, Operation.ROLLBACK): RolloutState.ROLLING_BACK for state in (
        RolloutState.RUNNING, RolloutState.PAUSED, RolloutState.ABORTED, RolloutState.SUCCEEDED)},
}


def operation_result(state: RolloutState, operation: Operation) -> RolloutState | None:
    """The state ``operation`` leads to from ``state`` (None: not allowed)."""
    return OPERATIONS.get((state, operation))


@dataclass(frozen=True)
class PhaseView:
    index: int
    bake_s: float
    success_threshold: float
    state: PhaseState
    bake_started_at: datetime | None = None


@dataclass(frozen=True)
class DeviceView:
    device_id: str
    position: int
    phase: int | None
    status: DeviceStatus
    attempts: int = 0
    notified_at: datetime | None = None
    next_attempt_at: datetime | None = None
    agent_state: str | None = None  # the state reported for the device's newest directive
    agent_reason: str | None = None
    rollback_attempts: int = 0


@dataclass(frozen=True)
class RolloutView:
    state: RolloutState
    shadow: bool  # a shadow rollout: no health gates; rolling back means dropping the candidate
    current_phase: int
    phases: tuple[PhaseView, ...]
    devices: tuple[DeviceView, ...]
    criteria: Criteria
    rate_limit_per_min: int
    device_timeout_s: float
    max_retries: int
    retry_backoff_s: float
    notified_last_minute: int = 0


# -- actions -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SetDevice:
    device_id: str
    status: DeviceStatus
    reason: str | None = None
    next_attempt_at: datetime | None = None


@dataclass(frozen=True)
class Notify:
    """Send the device its (install or shadow) directive; a retry when ``attempts`` > 0 already."""

    device_id: str


@dataclass(frozen=True)
class SendRollback:
    device_id: str


@dataclass(frozen=True)
class SetPhase:
    index: int
    state: PhaseState


@dataclass(frozen=True)
class SetRollout:
    state: RolloutState
    reason: str | None = None
    current_phase: int | None = None


Action = SetDevice | Notify | SendRollback | SetPhase | SetRollout


# -- the decision ------------------------------------------------------------------------------------


def retry_delay(base_s: float, attempts: int) -> float:
    return base_s * (2 ** max(0, attempts - 1))


class _Tick:
    def __init__(self, view: RolloutView, now: datetime, health: Mapping[str, HealthSample]) -> None:
        self.view = view
        self.now = now
        self.health = health
        self.devices = {device.device_id: device for device in view.devices}
        self.actions: list[Action] = []

    def set(self, device: DeviceView, status: DeviceStatus, reason: str | None = None,
            next_attempt_at: datetime | None = None) -> None:
        self.devices[device.device_id] = replace(device, status=status, next_attempt_at=next_attempt_at)
        self.actions.append(SetDevice(device.device_id, status, reason, next_attempt_at))

    def with_status(self, *statuses: DeviceStatus) -> list[DeviceView]:
        return sorted((d for d in self.devices.values() if d.status in statuses), key=lambda d: d.position)

    # 1 ---------------------------------------------------------------------------------------------

    def reports(self) -> None:
        rollback_success = "succeeded" if self.view.shadow else "rolled_back"
        for device in list(self.devices.values()):
            state = device.agent_state
            if state not in AGENT_FINAL:
                continue
            if device.status is DeviceStatus.NOTIFIED:
                if state == "succeeded":
                    self.set(device, DeviceStatus.SUCCEEDED)
                else:
                    self.set(device, DeviceStatus.FAILED, f"{state}: {device.agent_reason or 'no reason given'}")
            elif device.status in (DeviceStatus.TIMED_OUT, DeviceStatus.PENDING) and device.attempts and \
                    state == "succeeded":
                self.set(device, DeviceStatus.SUCCEEDED, "succeeded after its timeout")
            elif device.status is DeviceStatus.ROLLING_BACK:
                if state == rollback_success:
                    self.set(device, DeviceStatus.ROLLED_BACK)
                else:
                    self.set(device, DeviceStatus.ROLLBACK_FAILED, f"{state}: {device.agent_reason or '-'}")

    # 2 ---------------------------------------------------------------------------------------------

    def timeouts(self) -> None:
        view, timeout = self.view, timedelta(seconds=self.view.device_timeout_s)
        for device in self.with_status(DeviceStatus.NOTIFIED, DeviceStatus.ROLLING_BACK):
            if device.notified_at is None or self.now < device.notified_at + timeout:
                continue
            if device.status is DeviceStatus.ROLLING_BACK:
                if device.rollback_attempts <= view.max_retries:
                    self.actions.append(SendRollback(device.device_id))
                else:
                    self.set(device, DeviceStatus.ROLLBACK_FAILED,
                             f"no answer to {device.rollback_attempts} rollback directives")
            elif device.attempts <= view.max_retries and view.state in (RolloutState.RUNNING, RolloutState.PAUSED):
                delay = retry_delay(view.retry_backoff_s, device.attempts)
                self.set(device, DeviceStatus.PENDING,
                         f"no answer within {view.device_timeout_s:g}s (attempt {device.attempts} of "
                         f"{view.max_retries + 1}); retrying in {delay:g}s",
                         next_attempt_at=self.now + timedelta(seconds=delay))
            else:
                self.set(device, DeviceStatus.TIMED_OUT,
                         f"no answer within {view.device_timeout_s:g}s after {device.attempts} attempts")

    # 3 ---------------------------------------------------------------------------------------------

    def released(self) -> list[DeviceView]:
        """Devices in the phases started so far."""
        return [d for d in self.devices.values() if d.phase is not None and d.phase <= self.view.current_phase]

    def abort_reason(self) -> str | None:
        criteria = self.view.criteria
        released = self.released()
        failed = [d for d in released if d.status is DeviceStatus.FAILED]
        if released and len(failed) / len(released) > criteria.max_failure_rate:
            example = failed[0]
            return (f"install failure rate {len(failed) / len(released):.0%} ({len(failed)} of {len(released)} "
                    f"devices) exceeds {criteria.max_failure_rate:.0%}; e.g. {example.device_id}: "
                    f"{example.agent_state} {example.agent_reason or ''}".strip())
        if self.view.shadow:
            return None
        succeeded = [d for d in self.devices.values() if d.status is DeviceStatus.SUCCEEDED]
        samples = {d.device_id: self.health[d.device_id] for d in succeeded if d.device_id in self.health}
        evaluated = [device_id for device_id, sample in samples.items() if judged(sample, criteria)]
        regressed = {device_id: why for device_id in evaluated
                     if (why := regression(samples[device_id], criteria)) is not None}
        if evaluated and regressed and len(regressed) / len(evaluated) > criteria.max_unhealthy_share:
            device_id = sorted(regressed)[0]
            return (f"health regression on {len(regressed)} of {len(evaluated)} devices "
                    f"(limit {criteria.max_unhealthy_share:.0%}); e.g. {device_id}: {regressed[device_id]}")
        return None

    def stop(self, reason: str) -> None:
        """Abort: skip the devices not notified yet; roll back what took the release (auto_rollback)."""
        for device in self.with_status(DeviceStatus.PENDING):
            self.set(device, DeviceStatus.SKIPPED, "the rollout was aborted first")
        took = self.with_status(DeviceStatus.SUCCEEDED)
        if self.view.criteria.auto_rollback and (took or self.with_status(DeviceStatus.NOTIFIED)):
            self.actions.append(SetRollout(RolloutState.ROLLING_BACK, reason))
            self.rolling_back()
        else:
            self.actions.append(SetRollout(RolloutState.ABORTED, reason))

    # 4 ---------------------------------------------------------------------------------------------

    def phases(self) -> int:
        """Advance the phases; returns the current phase index afterwards (-1: the rollout ended)."""
        view = self.view
        index = view.current_phase
        phase = view.phases[index]
        if phase.state is PhaseState.PENDING:
            self.actions.append(SetPhase(index, PhaseState.ACTIVE))
            phase = replace(phase, state=PhaseState.ACTIVE)
        members = self.released()
        succeeded = sum(1 for d in members if d.status is DeviceStatus.SUCCEEDED)
        settled = all(d.status in SETTLED for d in members)
        ratio = succeeded / len(members) if members else 1.0
        if phase.state is PhaseState.ACTIVE:
            if ratio + 1e-9 >= phase.success_threshold:
                self.actions.append(SetPhase(index, PhaseState.BAKING))
                phase = replace(phase, state=PhaseState.BAKING, bake_started_at=self.now)
            elif settled:
                self.stop(f"phase {index + 1}: {succeeded} of {len(members)} devices succeeded ({ratio:.0%}), "
                          f"below its {phase.success_threshold:.0%} threshold")
                return -1
        if phase.state is not PhaseState.BAKING or phase.bake_started_at is None:
            return index
        if self.now < phase.bake_started_at + timedelta(seconds=phase.bake_s):
            return index
        if index + 1 < len(view.phases):
            self.actions.append(SetPhase(index, PhaseState.COMPLETED))
            self.actions.append(SetPhase(index + 1, PhaseState.ACTIVE))
            self.actions.append(SetRollout(RolloutState.RUNNING, current_phase=index + 1))
            return index + 1
        if all(d.status in SETTLED for d in self.devices.values()):
            self.actions.append(SetPhase(index, PhaseState.COMPLETED))
            self.actions.append(SetRollout(RolloutState.SUCCEEDED))
            return -1
        return index

    def notify(self, phase: int) -> None:
        budget = self.view.rate_limit_per_min - self.view.notified_last_minute
        due = [d for d in self.with_status(DeviceStatus.PENDING)
               if d.phase is not None and d.phase <= phase
               and (d.next_attempt_at is None or d.next_attempt_at <= self.now)]
        for device in sorted(due, key=lambda d: (d.phase, d.position))[:max(0, budget)]:
            self.devices[device.device_id] = replace(device, status=DeviceStatus.NOTIFIED)
            self.actions.append(Notify(device.device_id))

    # 5 ---------------------------------------------------------------------------------------------

    def rolling_back(self) -> None:
        for device in self.with_status(DeviceStatus.PENDING):
            self.set(device, DeviceStatus.SKIPPED, "the rollout was rolled back first")
        for device in self.with_status(DeviceStatus.SUCCEEDED):
            self.devices[device.device_id] = replace(device, status=DeviceStatus.ROLLING_BACK)
            self.actions.append(SendRollback(device.device_id))
        if not self.with_status(DeviceStatus.NOTIFIED, DeviceStatus.ROLLING_BACK):
            # rolled_back when the server rolled a device back; aborted when none had taken the release
            rolled = self.with_status(DeviceStatus.ROLLED_BACK, DeviceStatus.ROLLBACK_FAILED)
            self.actions.append(SetRollout(RolloutState.ROLLED_BACK if rolled else RolloutState.ABORTED))


def decide(view: RolloutView, now: datetime, health: Mapping[str, HealthSample] | None = None) -> list[Action]:
    """The actions one controller tick takes for this rollout, in order."""
    if view.state is RolloutState.DRAFT:
        return []
    tick = _Tick(view, now, health or {})
    tick.reports()
    tick.timeouts()
    if view.state is RolloutState.ROLLING_BACK:
        tick.rolling_back()
    elif view.state in (RolloutState.RUNNING, RolloutState.PAUSED):
        reason = tick.abort_reason()
        if reason is not None:
            tick.stop(reason)
        elif view.state is RolloutState.RUNNING:
            phase = tick.phases()
            if phase >= 0:
                tick.notify(phase)
    return tick.actions
