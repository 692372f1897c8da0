"""``edgefleet-agent-guard``: starts the agent under the trial rules of ``agent.selfupdate.trial``.

The service's command line (see firmware_images/systemd/edgefleet-agent.service)::

    /opt/edgefleet-agent/confirmed/bin/edgefleet-agent-guard --root /opt/edgefleet-agent -- \\
        /opt/edgefleet-agent/current/bin/edgefleet-agent --config /etc/edgefleet/agent.toml run

The guard itself runs from the *confirmed* slot, so a broken new agent cannot
break the code that rolls it back. Under the layout lock it decides:

* RUN: no trial; it ``exec``s the command and the agent becomes the service's
  main process (nothing stays behind).
* REVERT / DISCARD: it records the result, points ``current`` back at the
  previous slot (REVERT) and drops the trial, then ``exec``s the command.
* TRY: it stores the counted start and runs the command as a child. If the
  child exits, the guard exits with its status (``Restart=on-failure`` starts
  the service again and that start is counted). If the trial disappears (the
  candidate confirmed), it only forwards signals until the child exits. If the
  deadline passes with the trial still pending, it reverts, stops the child
  and ``exec``s the command, which now starts the previous slot.

The child gets the environment without ``WATCHDOG_PID`` so its ``sd_notify``
watchdog pings count (the unit sets ``NotifyAccess=all``). SIGTERM, SIGINT and
SIGHUP are forwarded to it.
"""

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType

from agent.errors import SelfUpdateError
from agent.selfupdate.layout import CONFIRMED, CURRENT, InstallLayout
from agent.selfupdate.trial import StartDecision, Trial, Verdict, deadline_reason, decide_start

log = logging.getLogger("agent.selfupdate.guard")

PROG = "edgefleet-agent-guard"
POLL_S = 0.5
STOP_GRACE_S = 15.0
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
EXEC_FAILED = 127


def exit_status(returncode: int) -> int:
    """A child's return code as a shell would report it (128 + N for death by signal N)."""
    return returncode if returncode >= 0 else 128 - returncode


class Guard:
    def __init__(self, layout: InstallLayout, command: Sequence[str], env: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.monotonic, stop_grace_s: float = STOP_GRACE_S) -> None:
        self.layout = layout
        self.command = list(command)
        self.env = dict(os.environ if env is None else env)
        self.clock = clock
        self.stop_grace_s = stop_grace_s
        self._child: subprocess.Popen[bytes] | None = None
        self._stopping = False

    def run(self) -> int:
        decision = self.decide()
        if decision.verdict is Verdict.TRY:
            assert decision.trial is not None
            return self._watch(decision.trial)
        return self._exec()

    def decide(self) -> StartDecision:
        """Apply the trial rules to this start (under the lock); returns what was decided."""
        with self.layout.lock():
            try:
                trial = self.layout.read_trial()
            except SelfUpdateError as exc:
                log.error("event=trial_unreadable error=%r", str(exc))
                self._fall_back_to_confirmed(f"the trial record is unreadable: {exc}")
                return StartDecision(Verdict.RUN)
            current = self.layout.target(CURRENT)
            decision = decide_start(trial, current)
            if decision.verdict is Verdict.TRY:
                assert decision.trial is not None
                self.layout.write_trial(decision.trial)
                log.info("event=agent_trial_start version=%s slot=%s start=%d of=%d report_timeout_s=%g",
                         decision.trial.version, decision.trial.candidate, decision.trial.starts,
                         decision.trial.max_starts, decision.trial.report_timeout_s)
            elif decision.verdict is Verdict.REVERT:
                assert trial is not None and decision.reason is not None
                self.layout.revert(trial, decision.reason, time.time())
                log.warning("event=agent_update_rolled_back version=%s reason=%r", trial.version, decision.reason)
            elif decision.verdict is Verdict.DISCARD:
                assert trial is not None and decision.reason is not None and current is not None
                self.layout.revert(trial, decision.reason, time.time())
                log.warning("event=agent_trial_discarded version=%s reason=%r", trial.version, decision.reason)
            return decision

    def _fall_back_to_confirmed(self, reason: str) -> None:
        """Without a usable trial record, the confirmed slot is the one known to work."""
        confirmed = self.layout.target(CONFIRMED)
        if confirmed is not None and self.layout.target(CURRENT) != confirmed:
            self.layout.switch(CURRENT, confirmed)
            log.warning("event=agent_slot_restored slot=%s reason=%r", confirmed, reason)
        self.layout.clear_trial()

    # -- watching a candidate ----------------------------------------------------

    def _watch(self, trial: Trial) -> int:
        env = {key: value for key, value in self.env.items() if key != "WATCHDOG_PID"}
        try:
            self._child = subprocess.Popen(self.command, env=env)
        except OSError as exc:
            log.error("event=agent_start_failed version=%s error=%r", trial.version, str(exc))
            return 1
        previous_handlers = {signum: signal.signal(signum, self._forward) for signum in FORWARDED_SIGNALS}
        try:
            deadline = self.clock() + trial.report_timeout_s
            watching = True
            while True:
                try:
                    return exit_status(self._child.wait(timeout=POLL_S))
                except subprocess.TimeoutExpired:
                    pass
                if not watching or self._stopping:
                    continue
                if not self._on_trial(trial):
                    log.info("event=agent_trial_confirmed version=%s slot=%s", trial.version, trial.candidate)
                    watching = False
                elif self.clock() >= deadline:
                    if self._give_up(trial):
                        break
                    watching = False
        finally:
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
        self._stop_child()
        return self._exec()

    def _on_trial(self, trial: Trial) -> bool:
        try:
            pending = self.layout.read_trial()
        except SelfUpdateError:
            return True  # unreadable: keep watching; the next start falls back to the confirmed slot
        return pending is not None and pending.sequence == trial.sequence

    def _give_up(self, trial: Trial) -> bool:
        """Deadline passed: revert unless the candidate confirmed meanwhile. True if reverted."""
        with self.layout.lock():
            if not self._on_trial(trial):
                return False
            reason = deadline_reason(trial)
            self.layout.revert(trial, reason, time.time())
        log.warning("event=agent_update_rolled_back version=%s reason=%r", trial.version, reason)
        return True

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self._stopping = True
        if self._child is not None and self._child.poll() is None:
            self._child.send_signal(signum)

    def _stop_child(self) -> None:
        child = self._child
        if child is None or child.poll() is not None:
            return
        child.terminate()
        try:
            child.wait(self.stop_grace_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()

    # -- starting the agent for good -------------------------------------------

    def _exec(self) -> int:
        if self._stopping:
            return 0
        try:
            os.execve(self.command[0], self.command, self.env)
        except OSError as exc:
            log.error("event=agent_exec_failed command=%s error=%r", self.command[0], str(exc))
        with self.layout.lock():
            current, confirmed = self.layout.target(CURRENT), self.layout.target(CONFIRMED)
            if confirmed is None or current == confirmed:
                return EXEC_FAILED
            self._fall_back_to_confirmed(f"slot {current} cannot start the agent")
        try:
            os.execve(self.command[0], self.command, self.env)
        except OSError as exc:
            log.error("event=agent_exec_failed command=%s error=%r", self.command[0], str(exc))
        return EXEC_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="Start the EdgeFleet agent; roll back a failed update.")
    parser.add_argument("--root", type=Path, required=True, help="the agent's install root (/opt/edgefleet-agent)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the agent's command line")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if not command:
        print(f"{PROG}: error: no agent command given (hint: {PROG} --root DIR -- AGENT RUN ...)", file=sys.stderr)
        return 2
    if not (args.root / "slots").is_dir():
        print(f"{PROG}: error: {args.root} is not an agent install root (hint: run install.sh)", file=sys.stderr)
        return 2
    try:
        return Guard(InstallLayout(args.root), command).run()
    except (SelfUpdateError, OSError) as exc:
        print(f"{PROG}: error: {exc} (hint: check the permissions of {args.root})", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
