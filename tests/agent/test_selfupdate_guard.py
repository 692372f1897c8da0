"""``edgefleet-agent-guard`` as a real process, with small stand-in agents in the two slots.

Each stand-in records "slot pid WATCHDOG_PID" in a journal and then exits, waits for SIGTERM, or
confirms its trial as the real agent does once it reported.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agent.selfupdate.layout import CONFIRMED, CURRENT, InstallLayout, InstallSettings
from agent.selfupdate.trial import Trial
from fleet_server.processes import wait_until

REPO = Path(__file__).resolve().parents[2]
SEQUENCE = 9

AGENT = """#!{python}
import os, signal, sys, time
sys.path.insert(0, {repo!r})
with open({journal!r}, "a") as journal:
    journal.write("{slot} %d %s\\n" % (os.getpid(), os.environ.get("WATCHDOG_PID", "-")))
mode = {mode!r}
signal.signal(signal.SIGTERM, lambda *args: sys.exit(0))  # before confirming: the test stops it right after
if mode.startswith("exit:"):
    sys.exit(int(mode[5:]))
if mode == "confirm":
    from agent.selfupdate.layout import InstallLayout
    layout = InstallLayout({root!r})
    with layout.lock():
        assert layout.confirm("{slot}", {sequence}, time.time()) is not None
time.sleep(120)
sys.exit(5)
"""


class Rig:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.journal = root / "journal.txt"
        self.layout = InstallLayout(root)
        self.layout.write_settings(InstallSettings(sys.executable, ""))
        self.agents(a="exit:0", b="exit:0")
        self.layout.switch(CURRENT, "a")
        self.layout.switch(CONFIRMED, "a")

    def agents(self, **modes: str) -> None:
        for slot, mode in modes.items():
            script = self.root / "slots" / slot / "bin" / "agent"
            script.parent.mkdir(parents=True, exist_ok=True)
            script.write_text(AGENT.format(python=sys.executable, repo=str(REPO), journal=str(self.journal),
                                           slot=slot, mode=mode, root=str(self.root), sequence=SEQUENCE))
            script.chmod(0o755)

    def start_trial(self, report_timeout_s: float = 30.0, max_starts: int = 2) -> None:
        self.layout.write_trial(Trial(SEQUENCE, "edgefleet-agent v2", "0.2.0", "b", "a", report_timeout_s,
                                      max_starts))
        self.layout.switch(CURRENT, "b")

    def guard(self, **env: str) -> subprocess.Popen[str]:
        argv = [sys.executable, "-m", "agent.selfupdate.guard", "--root", str(self.root), "--",
                str(self.root / "current" / "bin" / "agent")]
        return subprocess.Popen(argv, env={**os.environ, "PYTHONPATH": str(REPO), **env}, text=True,
                                stderr=subprocess.PIPE)

    def run_guard(self, **env: str) -> tuple[int, int]:
        process = self.guard(**env)
        _, stderr = process.communicate(timeout=60)
        self.stderr = stderr
        return process.pid, process.returncode

    def entries(self) -> list[tuple[str, int, str]]:
        if not self.journal.exists():
            return []
        return [(slot, int(pid), watchdog) for slot, pid, watchdog in
                (line.split() for line in self.journal.read_text().splitlines())]


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def test_without_a_trial_the_guard_becomes_the_agent(rig: Rig) -> None:
    pid, code = rig.run_guard(WATCHDOG_PID="4242")
    assert code == 0 and rig.entries() == [("a", pid, "4242")]  # exec: same process, environment untouched


def test_a_candidate_that_confirms_keeps_running_under_the_guard(rig: Rig) -> None:
    rig.agents(b="confirm")
    rig.start_trial()
    guard = rig.guard(WATCHDOG_PID="4242")
    wait_until(lambda: rig.layout.read_trial() is None, 30, "the candidate's confirmation")
    (slot, pid, watchdog), = rig.entries()
    assert (slot, watchdog) == ("b", "-") and pid != guard.pid  # a child, without the guard's WATCHDOG_PID
    assert (rig.layout.target(CURRENT), rig.layout.target(CONFIRMED)) == ("b", "b")
    assert rig.layout.read_result().outcome == "confirmed"
    guard.send_signal(signal.SIGTERM)  # systemctl stop: forwarded to the agent
    assert guard.wait(30) == 0


def test_a_candidate_that_keeps_crashing_is_replaced_by_the_previous_slot(rig: Rig) -> None:
    rig.agents(b="exit:3")
    rig.start_trial(max_starts=2)
    assert rig.run_guard()[1] == 3 and rig.layout.read_trial().starts == 1
    assert rig.run_guard()[1] == 3 and rig.layout.read_trial().starts == 2
    pid, code = rig.run_guard()  # the third start: the limit is reached, slot a comes back
    entries = rig.entries()
    assert code == 0 and [slot for slot, _, _ in entries] == ["b", "b", "a"] and entries[2][1] == pid
    assert (rig.layout.target(CURRENT), rig.layout.target(CONFIRMED)) == ("a", "a")
    result = rig.layout.read_result()
    assert result.outcome == "rolled_back" and "started 2 times" in result.reason
    assert rig.layout.read_trial() is None


def test_a_candidate_that_never_reports_is_stopped_at_the_deadline(rig: Rig) -> None:
    rig.agents(a="exit:0", b="hang")
    rig.start_trial(report_timeout_s=1.0)
    pid, code = rig.run_guard()
    entries = rig.entries()
    assert code == 0 and [slot for slot, _, _ in entries] == ["b", "a"] and entries[1][1] == pid
    assert (rig.layout.target(CURRENT), rig.layout.target(CONFIRMED)) == ("a", "a")
    assert "did not connect and report within 1 s" in rig.layout.read_result().reason


def test_a_stale_trial_is_discarded(rig: Rig) -> None:
    rig.start_trial()
    rig.layout.switch(CURRENT, "a")  # power cut after the trial was written, before the switch
    pid, code = rig.run_guard()
    assert code == 0 and rig.entries() == [("a", pid, "-")]
    assert rig.layout.read_trial() is None and "did not happen" in rig.layout.read_result().reason


def test_an_unreadable_trial_falls_back_to_the_confirmed_slot(rig: Rig) -> None:
    rig.start_trial()
    (rig.root / "trial.json").write_text("{garbage")
    pid, code = rig.run_guard()
    assert code == 0 and rig.entries() == [("a", pid, "-")] and rig.layout.target(CURRENT) == "a"
    assert not (rig.root / "trial.json").exists()


def test_a_slot_without_the_agent_falls_back_to_the_confirmed_one(rig: Rig) -> None:
    (rig.root / "slots" / "b" / "bin" / "agent").unlink()
    rig.layout.switch(CURRENT, "b")
    pid, code = rig.run_guard()
    assert code == 0 and rig.entries() == [("a", pid, "-")] and rig.layout.target(CURRENT) == "a"


def test_usage_errors_exit_2_with_a_hint(rig: Rig, tmp_path: Path) -> None:
    base = [sys.executable, "-m", "agent.selfupdate.guard"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    no_command = subprocess.run([*base, "--root", str(rig.root)], capture_output=True, text=True, env=env,
                                timeout=60)
    assert no_command.returncode == 2 and "hint:" in no_command.stderr
    not_a_root = subprocess.run([*base, "--root", str(tmp_path / "nowhere"), "--", "/bin/true"], capture_output=True,
                                text=True, env=env, timeout=60)
    assert not_a_root.returncode == 2 and "install.sh" in not_a_root.stderr
