"""The update driver: directive intake, supersession, one worker, resume after restart.

Raw directive payloads arrive from the MQTT network thread through ``submit``
(a queue put; paho is never blocked). An intake thread decodes and verifies
each against the trusted root, this device's facts and the highest sequence
seen so far:

* replays (sequence not above the last one) are dropped with an info log;
* any other protocol violation is reported as ``rejected`` and changes nothing
  else: the old model keeps serving and the last accepted sequence stays;
* a verified directive cancels every older job (a newer directive supersedes
  an unfinished one) and is queued for the single worker thread, which runs
  jobs one at a time in sequence order via ``DeploymentRunner``.

The last accepted sequence is persisted when the worker begins a job, so a
directive accepted but not begun before a crash is accepted again when the
broker redelivers the retained message. ``recover`` (called before serving
starts) settles the slots and finishes or resumes the deployment in flight.
"""

import logging
import queue
import threading
from collections.abc import Callable
from datetime import datetime

from agent.clock import DeviceClock
from agent.deployment import DeploymentTracker
from agent.errors import AgentError
from agent.job import Job, claimed_identity, rebuild_job
from agent.protocol.errors import ExpiredError, ProtocolError, ReplayError
from agent.protocol.messages import DirectiveMessage
from agent.protocol.metadata import Root
from agent.protocol.verify import DeviceFacts, check_not_downgrade, verify_update
from agent.runner import DeploymentRunner, describe
from agent.slots import CURRENT, SlotStore
from agent.statemachine import IN_FLIGHT_STATES, Event, State

log = logging.getLogger(__name__)

SYNCHRONOUS_RESUME_STATES = frozenset({State.INSTALLING, State.HEALTH_CHECK})


class Updater:
    def __init__(self, facts: DeviceFacts, root: Root, tracker: DeploymentTracker, slots: SlotStore,
                 runner: DeploymentRunner, clock: DeviceClock | None = None) -> None:
        self.facts = facts
        self.clock = clock or DeviceClock()
        self.root = root
        self.tracker = tracker
        self.slots = slots
        self.runner = runner
        self._inbox: queue.Queue[bytes | None] = queue.Queue()
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._pending: list[Job] = []  # accepted and not finished: queued or running
        self._highest_seen = tracker.record.last_accepted_sequence
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self.refresh_root: Callable[[Root], Root] | None = None  # fetches newer roots before each verification

    # -- lifecycle -------------------------------------------------------------

    def recover(self) -> None:
        """Settle the slots after a restart; finish an install/health check in flight, queue any other."""
        self.slots.recover()
        record = self.tracker.record
        if record.state not in IN_FLIGHT_STATES:
            return
        log.info("event=deployment_resume seq=%d state=%s", record.sequence, record.state)
        try:
            job = rebuild_job(record, self.root, self.facts)
        except AgentError as exc:
            self.tracker.advance(record.sequence, Event.FAILED, f"cannot resume after restart: {describe(exc)}")
            return
        # A model install finishes before serving starts; an agent update waits for the MQTT link: queued.
        if record.state in SYNCHRONOUS_RESUME_STATES and not job.is_agent_update:
            self.runner.run(job)
        else:
            self._enqueue(job)

    def start(self) -> None:
        for name, target in (("directive-intake", self._intake_loop), ("deployment-worker", self._worker_loop)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        """Pause the running job (it resumes at the next start) and stop the threads."""
        self._stopping.set()
        with self._lock:
            for job in self._pending:
                job.cancel.set()
        self._inbox.put(None)
        self._jobs.put(None)
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    @property
    def busy(self) -> bool:
        with self._lock:
            return bool(self._pending)

    # -- intake ----------------------------------------------------------------

    def submit(self, payload: bytes) -> None:
        """Hand over a raw directive payload (called from the MQTT network thread)."""
        self._inbox.put(payload)

    def _intake_loop(self) -> None:
        while (payload := self._inbox.get()) is not None:
            try:
                self.accept(payload)
            except Exception:
                log.exception("event=directive_intake_crashed")

    def accept(self, payload: bytes, now: datetime | None = None) -> Job | None:
        """Verify one directive message; queue it if it is new and valid. Returns the queued job."""
        now = now or self.clock.now()
        directive_document = None
        with self._lock:
            last = self._highest_seen
        if self.refresh_root is not None:
            self.root = self.refresh_root(self.root)
        try:
            message = DirectiveMessage.decode(payload)
            directive_document = message.directive
            update = verify_update(self.root, message.directive, message.release, self.facts, last, now)
            if now >= self.root.expires:  # after verify_update: a replayed directive is ignored, not rejected
                raise ExpiredError(f"the trusted root expired at {self.root.expires.isoformat()}")
            current = self.slots.read(CURRENT)
            check_not_downgrade(update.directive, update.release,
                                None if current is None else (current.release_name, current.release_version))
        except ReplayError as exc:
            log.info("event=directive_ignored reason=replay detail=%r", str(exc))
            return None
        except ProtocolError as exc:
            sequence, name, version = claimed_identity(directive_document)
            log.warning("event=directive_rejected seq=%d error=%r", sequence, describe(exc))
            self.tracker.reject(sequence, name, version, describe(exc), busy=self.busy)
            return None
        job = Job(update.directive, update.release, update.variant, message.directive, message.release,
                  now.replace(microsecond=0))
        with self._lock:
            if job.sequence <= self._highest_seen:
                log.info("event=directive_ignored reason=replay seq=%d", job.sequence)
                return None
            self._highest_seen = job.sequence
        log.info("event=directive_accepted seq=%d action=%s release=%s version=%d variant=%s", job.sequence,
                 job.directive.action, job.release.name, job.release.version, job.variant.name if job.variant else "-")
        self._enqueue(job)
        return job

    def _enqueue(self, job: Job) -> None:
        with self._lock:
            for older in self._pending:
                if older.sequence < job.sequence:
                    older.superseded_by = job.sequence
                    older.cancel.set()
            self._pending.append(job)
        self._jobs.put(job)

    # -- worker ----------------------------------------------------------------

    def _worker_loop(self) -> None:
        while (job := self._jobs.get()) is not None and not self._stopping.is_set():
            self._run(job)

    def run_pending(self) -> None:
        """Run every queued job on the calling thread (for tests and single-threaded embedding)."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is None:
                return
            self._run(job)

    def _run(self, job: Job) -> None:
        try:
            self.runner.run(job)
        finally:
            with self._lock:
                self._pending.remove(job)
