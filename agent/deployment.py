"""The deployment tracker: applies state machine events, persists them, publishes them.

Every transition goes through ``advance``: it looks the next state up in the
pure transition table, writes ``state.json`` atomically, logs
``event=state_change`` and only then publishes the ``status`` message, so a
state is never reported that a power cut could undo. Events of a deployment
that a newer directive replaced are refused with ``DeploymentCancelledError``.
"""

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from agent.errors import DeploymentCancelledError
from agent.protocol.messages import StatusMessage
from agent.state_store import DeploymentRecord, StateStore
from agent.statemachine import FINAL_STATES, RESTING_STATES, Event, State, next_state

log = logging.getLogger(__name__)


class StatusPublisher(Protocol):
    def publish_status(self, message: StatusMessage) -> None: ...


class DeploymentTracker:
    """Thread safe owner of the persisted ``DeploymentRecord``."""

    def __init__(self, device_id: str, store: StateStore, publisher: StatusPublisher) -> None:
        self.device_id = device_id
        self._store = store
        self._publisher = publisher
        self._lock = threading.RLock()
        self._record = store.load()
        self._listeners: list[Callable[[DeploymentRecord], None]] = []

    @property
    def record(self) -> DeploymentRecord:
        with self._lock:
            return self._record

    @property
    def state(self) -> State:
        return self.record.state

    def add_listener(self, listener: Callable[[DeploymentRecord], None]) -> None:
        """Call ``listener`` with the new record after every transition."""
        self._listeners.append(listener)

    def begin(self, sequence: int, **fields: Any) -> State:
        """NEW_DIRECTIVE: start tracking a verified directive; its sequence becomes the last accepted one."""
        with self._lock:
            last = max(self._record.last_accepted_sequence, sequence)
            changes = {"target_sha256": None, "variant": None, **fields}
            return self._apply(Event.NEW_DIRECTIVE, None, sequence=sequence, last_accepted_sequence=last, **changes)

    def advance(self, sequence: int, event: Event, reason: str | None = None, **changes: Any) -> State:
        """Apply ``event`` to the deployment of directive ``sequence``."""
        with self._lock:
            if self._record.sequence != sequence:
                raise DeploymentCancelledError(
                    f"directive {sequence} is no longer tracked (now {self._record.sequence})")
            return self._apply(event, reason, **changes)

    def reject(self, sequence: int, release_name: str | None, release_version: int | None, reason: str,
               busy: bool) -> None:
        """A directive failed verification: report it; record it unless another deployment is under way."""
        with self._lock:
            if not busy and self._record.state in RESTING_STATES:
                self._apply(Event.DIRECTIVE_REJECTED, reason, sequence=sequence, action=None,
                            release_name=release_name, release_version=release_version, variant=None,
                            target_sha256=None, accepted_at=None, directive=None, release=None)
                return
            log.info("event=directive_rejected device=%s seq=%d reason=%r (deployment %d continues)",
                     self.device_id, sequence, reason, self._record.sequence)
            self._publish(StatusMessage(self.device_id, State.REJECTED.value, sequence, release_name,
                                        release_version, None, reason))

    def _apply(self, event: Event, reason: str | None, **changes: Any) -> State:
        previous = self._record
        target = next_state(previous.state, event)
        if target in FINAL_STATES:
            changes.update(directive=None, release=None)
        record = previous.evolve(state=target, reason=reason, **changes)
        self._store.save(record)
        self._record = record
        log.info("event=state_change device=%s from=%s to=%s seq=%d release=%s version=%s reason=%r",
                 self.device_id, previous.state, target, record.sequence, record.release_name,
                 record.release_version, reason)
        self._publish(self._status_of(record))
        for listener in self._listeners:
            try:
                listener(record)
            except Exception:
                log.exception("event=state_listener_failed")
        return target

    def republish(self) -> None:
        """Send the current state again, as first sent (same timestamp: the server recognises the repeat).

        Called at every (re)connect and heartbeat, so a status that never reached the server (the broker
        acknowledged it and lost it, e.g. restarted before the server subscribed again) arrives after all.
        """
        with self._lock:
            if self._record.sequence > 0 and self._record.state is not State.IDLE:
                self._publish(self._status_of(self._record))

    def _status_of(self, record: DeploymentRecord) -> StatusMessage:
        return StatusMessage(self.device_id, record.state.value, record.sequence, record.release_name,
                             record.release_version, record.variant, _clip(record.reason), record.updated_at)

    def _publish(self, message: StatusMessage) -> None:
        try:
            self._publisher.publish_status(message)
        except Exception as exc:  # publishing must never break the deployment flow
            log.warning("event=status_publish_failed seq=%d state=%s error=%r", message.sequence, message.state,
                        str(exc))


def _clip(reason: str | None, limit: int = 2000) -> str | None:
    return None if reason is None else reason[:limit]
