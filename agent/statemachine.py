"""The deployment state machine: states, events and ONE transition table.

Pure: no I/O, no clock. The updater performs the steps and feeds the outcome
of each as an ``Event``; ``next_state`` looks the pair up in ``TRANSITIONS``
and refuses anything the table does not list.

Install:   idle/final --NEW_DIRECTIVE--> notified --START_DOWNLOAD--> downloading
           --DOWNLOADED--> verifying --ARTIFACT_VERIFIED--> installing
           --INSTALLED--> health_check --HEALTH_PASSED--> succeeded
Rollback:  notified --START_ROLLBACK--> installing --INSTALLED--> health_check
           --ROLLED_BACK--> rolled_back
Shadow:    the install path, into the shadow slot (the served model stays); a
           failed health check discards the candidate and ends in failed
Drop:      notified --SHADOW_DROPPED--> succeeded (the shadow slot is removed)
A failed health check restores the previous slot and ends in rolled_back; a
bad artifact ends in rejected; any other failure ends in failed. A newer
directive supersedes whatever runs: NEW_DIRECTIVE is valid from every state.
"""

import enum

from agent.errors import InvalidTransitionError


class State(enum.StrEnum):
    IDLE = "idle"
    NOTIFIED = "notified"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    INSTALLING = "installing"
    HEALTH_CHECK = "health_check"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    REJECTED = "rejected"


class Event(enum.StrEnum):
    NEW_DIRECTIVE = "new_directive"  # a verified directive with a higher sequence
    DIRECTIVE_REJECTED = "directive_rejected"  # a directive failed verification
    START_DOWNLOAD = "start_download"
    START_ROLLBACK = "start_rollback"
    DOWNLOADED = "downloaded"
    ARTIFACT_VERIFIED = "artifact_verified"
    ARTIFACT_REJECTED = "artifact_rejected"  # length/sha256 do not match the release
    INSTALLED = "installed"  # the target slot is current
    HEALTH_PASSED = "health_passed"
    ROLLED_BACK = "rolled_back"  # the previous slot is current again (and healthy)
    FAILED = "failed"  # download/IO error, expiry, superseded, ...
    SHADOW_DROPPED = "shadow_dropped"  # the shadow candidate is stopped and its slot removed


FINAL_STATES = frozenset({State.SUCCEEDED, State.FAILED, State.ROLLED_BACK, State.REJECTED})
IN_FLIGHT_STATES = frozenset({State.NOTIFIED, State.DOWNLOADING, State.VERIFYING, State.INSTALLING, State.HEALTH_CHECK})
RESTING_STATES = FINAL_STATES | {State.IDLE}

TRANSITIONS: dict[tuple[State, Event], State] = {
    **{(state, Event.NEW_DIRECTIVE): State.NOTIFIED for state in State},
    **{(state, Event.DIRECTIVE_REJECTED): State.REJECTED for state in RESTING_STATES},
    **{(state, Event.FAILED): State.FAILED for state in IN_FLIGHT_STATES},
    (State.NOTIFIED, Event.START_DOWNLOAD): State.DOWNLOADING,
    (State.NOTIFIED, Event.START_ROLLBACK): State.INSTALLING,
    (State.DOWNLOADING, Event.DOWNLOADED): State.VERIFYING,
    (State.DOWNLOADING, Event.ARTIFACT_REJECTED): State.REJECTED,
    (State.VERIFYING, Event.ARTIFACT_VERIFIED): State.INSTALLING,
    (State.VERIFYING, Event.ARTIFACT_REJECTED): State.REJECTED,
    (State.INSTALLING, Event.INSTALLED): State.HEALTH_CHECK,
    (State.HEALTH_CHECK, Event.HEALTH_PASSED): State.SUCCEEDED,
    (State.HEALTH_CHECK, Event.ROLLED_BACK): State.ROLLED_BACK,
    (State.NOTIFIED, Event.SHADOW_DROPPED): State.SUCCEEDED,
}


def next_state(state: State, event: Event) -> State:
    """The state ``event`` leads to from ``state``; raise ``InvalidTransitionError`` if none."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransitionError(f"no transition from {state} on {event}") from None
