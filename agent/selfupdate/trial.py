"""The trial of a new agent, and what a (re)start of the service does with it. Pure: no I/O.

The old agent installs the new version into the other slot, records a ``Trial``
and points ``current`` at the candidate. From then on every start of the
service goes through ``decide_start`` (run by the guard, from the confirmed
slot), like U-Boot's boot counter:

    no trial                          -> RUN      start the current slot
    current is not the candidate      -> DISCARD  the switch never happened: drop the trial
    starts >= max_starts              -> REVERT   the previous slot becomes current again
    otherwise                         -> TRY      count this start, run the candidate under watch

Under watch the candidate has ``report_timeout_s`` to connect and report; then
it confirms the trial (``confirmed`` points at it, the trial is removed). A
candidate that crashes is restarted by systemd and counted again; one that
runs but never reports is stopped at the deadline and the previous slot comes
back. How it ended is kept as an ``UpdateResult`` for the agent to report.
"""

import enum
import math
from dataclasses import asdict, dataclass
from typing import Any

SLOT_NAMES = ("a", "b")
CONFIRMED = "confirmed"
ROLLED_BACK = "rolled_back"
OUTCOMES = (CONFIRMED, ROLLED_BACK)


def _field(document: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = document.get(name)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ValueError(f"field {name} is missing or not a {getattr(kind, '__name__', kind)}")
    return value


def _slot(document: dict[str, Any], name: str) -> str:
    value = _field(document, name, str)
    if value not in SLOT_NAMES:
        raise ValueError(f"field {name} must be one of {', '.join(SLOT_NAMES)}")
    return value


@dataclass(frozen=True)
class Trial:
    sequence: int  # the directive that installs the candidate
    release: str  # "name vN" of the agent release, for messages
    version: str  # the agent version the candidate must run
    candidate: str  # slot on trial
    previous: str  # slot that comes back if the candidate fails
    report_timeout_s: float
    max_starts: int
    starts: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, document: Any) -> "Trial":
        if not isinstance(document, dict):
            raise ValueError("a trial must be a JSON object")
        trial = cls(
            sequence=_field(document, "sequence", int),
            release=_field(document, "release", str),
            version=_field(document, "version", str),
            candidate=_slot(document, "candidate"),
            previous=_slot(document, "previous"),
            report_timeout_s=float(_field(document, "report_timeout_s", (int, float))),
            max_starts=_field(document, "max_starts", int),
            starts=_field(document, "starts", int),
        )
        if trial.candidate == trial.previous:
            raise ValueError("candidate and previous must be different slots")
        if not (math.isfinite(trial.report_timeout_s) and trial.report_timeout_s > 0):
            raise ValueError("report_timeout_s must be > 0")
        if trial.max_starts < 1 or trial.starts < 0:
            raise ValueError("max_starts must be >= 1 and starts >= 0")
        return trial


@dataclass(frozen=True)
class UpdateResult:
    sequence: int
    outcome: str  # CONFIRMED or ROLLED_BACK
    version: str  # the candidate's version
    slot: str  # the slot that is current afterwards
    reason: str | None
    at: float  # unix time

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, document: Any) -> "UpdateResult":
        if not isinstance(document, dict):
            raise ValueError("an update result must be a JSON object")
        outcome = _field(document, "outcome", str)
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}")
        reason = document.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise ValueError("reason must be a string or null")
        return cls(_field(document, "sequence", int), outcome, _field(document, "version", str),
                   _slot(document, "slot"), reason, float(_field(document, "at", (int, float))))


class Verdict(enum.StrEnum):
    RUN = "run"
    TRY = "try"
    REVERT = "revert"
    DISCARD = "discard"


@dataclass(frozen=True)
class StartDecision:
    verdict: Verdict
    trial: Trial | None = None  # TRY: the trial with this start counted (to persist before starting)
    reason: str | None = None  # REVERT / DISCARD: why


def decide_start(trial: Trial | None, current: str | None) -> StartDecision:
    """What a start of the service does, given the pending trial and the slot ``current`` points at."""
    if trial is None:
        return StartDecision(Verdict.RUN)
    if current != trial.candidate:
        return StartDecision(Verdict.DISCARD, reason=(
            f"the switch to agent {trial.version} in slot {trial.candidate} did not happen; "
            f"slot {current} stays current"))
    if trial.starts >= trial.max_starts:
        return StartDecision(Verdict.REVERT, reason=(
            f"agent {trial.version} in slot {trial.candidate} was started {trial.starts} times and never "
            f"reported; slot {trial.previous} is current again"))
    return StartDecision(Verdict.TRY, trial=Trial(**{**trial.to_dict(), "starts": trial.starts + 1}))


def deadline_reason(trial: Trial) -> str:
    """Why the candidate is given up when it runs but does not report in time."""
    return (f"agent {trial.version} in slot {trial.candidate} did not connect and report within "
            f"{trial.report_timeout_s:g} s; slot {trial.previous} is current again")
