"""The two steps a deployment of an agent release runs (called by ``agent.runner``).

install (state ``installing``, in the old agent):
    the wheel goes into the other slot (``agent.selfupdate.installer``), a trial
    is recorded and ``current`` points at the new slot. Idempotent: the new agent
    resuming an interrupted install finds itself already running as the candidate.

check (state ``health_check``), depending on who runs it:
    * the old agent, with the switch done: it asks for a restart (the service
      exits with ``RESTART_EXIT_CODE`` and systemd starts the guard, which starts
      the new slot); the deployment stays in ``health_check``;
    * the new agent, as the candidate: it waits until its MQTT link is up and
      the broker acknowledged its presence, confirms the trial, and the
      deployment passes (``succeeded`` is the new agent's own report);
    * the old agent again, after the guard brought it back: the deployment is
      ``rolled_back`` with the guard's reason.
"""

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import agent
from agent.errors import SelfUpdateError
from agent.job import Job
from agent.selfupdate.layout import CONFIRMED, CURRENT, InstallLayout, detect_layout
from agent.selfupdate.trial import CONFIRMED as CONFIRMED_OUTCOME
from agent.selfupdate.trial import Trial
from agent.statemachine import Event

if TYPE_CHECKING:
    from agent.selfupdate.bundle import AgentBundle

log = logging.getLogger(__name__)

RESTART_EXIT_CODE = 75  # EX_TEMPFAIL: "start me again" (the unit's Restart= does, into the new slot)


def install_wheel(python: str, source_slot: Path, target_slot: Path, wheel: Path, bundle: "AgentBundle",
                  extras: str) -> None:
    """``agent.selfupdate.installer.install_wheel``, imported when an agent update comes (its
    importlib.metadata, zipfile and csv cost the always-running agent about 1 MB resident)."""
    from agent.selfupdate import installer

    installer.install_wheel(python, source_slot, target_slot, wheel, bundle, extras)


@dataclass(frozen=True)
class TrialSettings:
    report_timeout_s: float = 120.0
    max_starts: int = 3


class SelfUpdater:
    def __init__(self, layout: InstallLayout, running_slot: str, settings: TrialSettings,
                 request_restart: Callable[[], None], report: Callable[[float], bool],
                 version: str = agent.__version__) -> None:
        self.layout = layout
        self.running_slot = running_slot
        self.settings = settings
        self.request_restart = request_restart
        self.report = report  # report(timeout_s): connected and presence acknowledged in time?
        self.version = version

    @classmethod
    def for_this_process(cls, settings: TrialSettings, request_restart: Callable[[], None],
                         report: Callable[[float], bool]) -> "SelfUpdater | None":
        """The self-updater of an agent running from an A/B slot; None otherwise."""
        found = detect_layout(Path(sys.prefix))
        return None if found is None else cls(found[0], found[1], settings, request_restart, report)

    def install(self, job: Job, wheel: Path) -> None:
        trial = self.layout.read_trial()
        if trial is not None and trial.sequence == job.sequence and trial.candidate == self.running_slot:
            log.info("event=agent_install_skipped seq=%d reason=already_running_the_candidate", job.sequence)
            return
        from agent.selfupdate.bundle import inspect_wheel  # zipfile: imported when an agent update comes

        bundle = inspect_wheel(wheel)
        if self.layout.target(CONFIRMED) != self.running_slot:
            raise SelfUpdateError("this agent is itself on trial; deploy again once it is confirmed")
        target = self.layout.other_slot(self.running_slot)
        settings = self.layout.read_settings()
        log.info("event=agent_install seq=%d version=%s from=%s slot=%s", job.sequence, bundle.version,
                 self.version, target)
        install_wheel(settings.python, self.layout.slot_dir(self.running_slot), self.layout.slot_dir(target),
                      wheel, bundle, settings.extras)
        with self.layout.lock():
            self.layout.write_trial(Trial(job.sequence, f"{job.release.name} v{job.release.version}", bundle.version,
                                          target, self.running_slot, self.settings.report_timeout_s,
                                          self.settings.max_starts))
            self.layout.switch(CURRENT, target)
        log.info("event=agent_switched seq=%d slot=%s version=%s", job.sequence, target, bundle.version)

    def check(self, job: Job) -> tuple[Event, str | None] | None:
        """The health-check step; an (event, reason) to advance with, or None to leave it pending."""
        trial = self.layout.read_trial()
        if trial is not None and trial.sequence == job.sequence:
            if trial.candidate == self.running_slot:
                return self._confirm(job, trial)
            if self.layout.target(CURRENT) == trial.candidate:
                log.info("event=agent_restart_requested seq=%d version=%s", job.sequence, trial.version)
                self.request_restart()
                return None
            with self.layout.lock():
                reverted = self.layout.revert(trial, "the switch to the new agent did not happen", time.time())
            return Event.ROLLED_BACK, reverted.reason
        result = self.layout.read_result()
        if result is not None and result.sequence == job.sequence:
            if result.outcome == CONFIRMED_OUTCOME and result.slot == self.running_slot:
                return Event.HEALTH_PASSED, None
            return Event.ROLLED_BACK, result.reason or f"agent {result.version} was rolled back"
        return Event.ROLLED_BACK, f"agent {self.version} in slot {self.running_slot} is running, not the update"

    def _confirm(self, job: Job, trial: Trial) -> tuple[Event, str | None] | None:
        if self.version != trial.version:
            log.error("event=agent_version_mismatch expected=%s running=%s", trial.version, self.version)
            return None  # never confirm a slot that does not run what was installed; the guard reverts it
        if not self.report(trial.report_timeout_s):
            log.warning("event=agent_report_timeout seq=%d timeout_s=%g", job.sequence, trial.report_timeout_s)
            return None
        with self.layout.lock():
            result = self.layout.confirm(self.running_slot, job.sequence, time.time())
        if result is None:  # the guard gave up meanwhile; the previous agent reports the rollback
            log.warning("event=agent_confirm_too_late seq=%d", job.sequence)
            return None
        log.info("event=agent_update_confirmed seq=%d version=%s slot=%s", job.sequence, self.version,
                 self.running_slot)
        return Event.HEALTH_PASSED, None
