"""The deployment state machine: every table entry, and every pair the table refuses."""

import pytest

from agent.errors import InvalidTransitionError
from agent.protocol.messages import DEPLOYMENT_STATES, FINAL_STATES
from agent.statemachine import (
    FINAL_STATES as MACHINE_FINAL_STATES,
)
from agent.statemachine import (
    IN_FLIGHT_STATES,
    TRANSITIONS,
    Event,
    State,
    next_state,
)


@pytest.mark.parametrize(("state", "event", "expected"),
                         [(state, event, target) for (state, event), target in TRANSITIONS.items()],
                         ids=[f"{state}-{event}" for state, event in TRANSITIONS])
def test_every_table_entry(state: State, event: Event, expected: State) -> None:
    assert next_state(state, event) is expected


INVALID = [(state, event) for state in State for event in Event if (state, event) not in TRANSITIONS]


@pytest.mark.parametrize(("state", "event"), INVALID, ids=[f"{state}-{event}" for state, event in INVALID])
def test_pairs_outside_the_table_are_refused(state: State, event: Event) -> None:
    with pytest.raises(InvalidTransitionError, match=f"{state}.*{event}"):
        next_state(state, event)


def test_states_are_the_protocols_deployment_states() -> None:
    assert [state.value for state in State] == list(DEPLOYMENT_STATES)
    assert {state.value for state in MACHINE_FINAL_STATES} == set(FINAL_STATES)


def test_a_new_directive_supersedes_from_every_state() -> None:
    assert {next_state(state, Event.NEW_DIRECTIVE) for state in State} == {State.NOTIFIED}


def test_every_in_flight_state_can_fail_and_no_final_state_can() -> None:
    for state in IN_FLIGHT_STATES:
        assert next_state(state, Event.FAILED) is State.FAILED
    for state in MACHINE_FINAL_STATES:
        with pytest.raises(InvalidTransitionError):
            next_state(state, Event.FAILED)


def test_rejection_of_a_directive_does_not_interrupt_a_deployment() -> None:
    for state in IN_FLIGHT_STATES:
        with pytest.raises(InvalidTransitionError):
            next_state(state, Event.DIRECTIVE_REJECTED)


def test_happy_install_path() -> None:
    state = State.IDLE
    for event in (Event.NEW_DIRECTIVE, Event.START_DOWNLOAD, Event.DOWNLOADED, Event.ARTIFACT_VERIFIED,
                  Event.INSTALLED, Event.HEALTH_PASSED):
        state = next_state(state, event)
    assert state is State.SUCCEEDED


def test_rollback_path_skips_the_download() -> None:
    state = next_state(State.SUCCEEDED, Event.NEW_DIRECTIVE)
    for event in (Event.START_ROLLBACK, Event.INSTALLED, Event.ROLLED_BACK):
        state = next_state(state, event)
    assert state is State.ROLLED_BACK


def test_dropping_a_shadow_goes_straight_to_succeeded() -> None:
    state = next_state(State.SUCCEEDED, Event.NEW_DIRECTIVE)
    assert next_state(state, Event.SHADOW_DROPPED) is State.SUCCEEDED
    for other in set(State) - {State.NOTIFIED}:
        with pytest.raises(InvalidTransitionError):
            next_state(other, Event.SHADOW_DROPPED)
