"""An agent release through the deployment runner: install into the other slot, restart, confirm or
roll back, with really signed directives and a real layout (the pip install itself is faked here;
test_selfupdate_installer and the firmware end-to-end tests run it for real)."""

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.protocol.metadata import Action, ArtifactVariant, Compatibility, Runtime
from agent.selfupdate.layout import CONFIRMED, CURRENT, InstallLayout, InstallSettings
from agent.selfupdate.manager import SelfUpdater, TrialSettings
from tests.agent.artifact_server import ArtifactServer
from tests.agent.signing import MiniFleet
from tests.agent.updater_rig import Rig, make_rig
from tests.helpers.wheels import make_wheel

RUNTIMES = ("onnxruntime", "agent")


class Restarts:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


@pytest.fixture
def server() -> Iterator[ArtifactServer]:
    with ArtifactServer() as server:
        yield server


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> InstallLayout:
    layout = InstallLayout(tmp_path / "opt")
    (layout.slots / "a").mkdir(parents=True)
    layout.write_settings(InstallSettings("/usr/bin/python3", "agent"))
    layout.switch(CURRENT, "a")
    layout.switch(CONFIRMED, "a")
    installs: list[tuple[Path, Path, str]] = []

    def fake_install(python: str, source: Path, target: Path, wheel: Path, bundle: object, extras: str) -> None:
        target.mkdir(parents=True, exist_ok=True)
        installs.append((source, target, extras))

    monkeypatch.setattr("agent.selfupdate.manager.install_wheel", fake_install)
    layout.installs = installs  # type: ignore[attr-defined]
    return layout


def agent_rig(fleet: MiniFleet, server: ArtifactServer, data_dir: Path, updater: SelfUpdater | None) -> Rig:
    rig = make_rig(fleet, server, data_dir, runtimes=RUNTIMES)
    rig.runner.agent_update = updater
    return rig


def agent_release(fleet: MiniFleet, server: ArtifactServer, tmp_path: Path, version: str = "0.2.0") -> dict:
    data = make_wheel(tmp_path / version, version).read_bytes()
    server.add(data)
    variant = ArtifactVariant("whl-py3", "model.whl", Runtime.AGENT, "py3", hashlib.sha256(data).hexdigest(),
                              len(data), Compatibility())
    return fleet.release((variant,), name="edgefleet-agent", inputs=(), outputs=())


def updater(layout: InstallLayout, slot: str, version: str, restarts: Restarts, reports: bool = True) -> SelfUpdater:
    return SelfUpdater(layout, slot, TrialSettings(30.0, 3), restarts, lambda timeout: reports, version)


def test_a_good_update_switches_restarts_and_confirms(layout: InstallLayout, server: ArtifactServer,
                                                      tmp_path: Path) -> None:
    fleet, restarts = MiniFleet(), Restarts()
    old = agent_rig(fleet, server, tmp_path / "data", updater(layout, "a", "0.1.0", restarts))
    old.deploy(fleet.message(agent_release(fleet, server, tmp_path)))
    assert old.publisher.states(1) == ["notified", "downloading", "verifying", "installing", "health_check"]
    assert restarts.count == 1 and layout.target(CURRENT) == "b" and layout.target(CONFIRMED) == "a"
    trial = layout.read_trial()
    assert (trial.candidate, trial.previous, trial.version, trial.sequence) == ("b", "a", "0.2.0", 1)
    assert [(source.name, target.name, extras) for source, target, extras in layout.installs] == [("a", "b", "agent")]
    assert not list((tmp_path / "data" / "downloads").glob("*"))  # the wheel is not kept once installed

    new = agent_rig(fleet, server, tmp_path / "data", updater(layout, "b", "0.2.0", Restarts()))  # the restart
    new.updater.recover()
    assert new.publisher.messages == []  # an agent update is never resumed before the MQTT link runs
    new.updater.run_pending()
    assert new.publisher.states(1) == ["succeeded"]
    assert layout.target(CONFIRMED) == "b" and layout.read_trial() is None


def test_a_new_agent_that_cannot_report_leaves_it_to_the_guard(layout: InstallLayout, server: ArtifactServer,
                                                               tmp_path: Path) -> None:
    fleet = MiniFleet()
    old = agent_rig(fleet, server, tmp_path / "data", updater(layout, "a", "0.1.0", Restarts()))
    old.deploy(fleet.message(agent_release(fleet, server, tmp_path)))
    silent = agent_rig(fleet, server, tmp_path / "data", updater(layout, "b", "0.2.0", Restarts(), reports=False))
    silent.updater.recover()
    silent.updater.run_pending()
    assert silent.publisher.messages == [] and layout.read_trial() is not None  # still on trial

    with layout.lock():  # what the guard does at the deadline
        layout.revert(layout.read_trial(), "agent 0.2.0 did not connect and report within 30 s", 1.0)
    back = agent_rig(fleet, server, tmp_path / "data", updater(layout, "a", "0.1.0", Restarts()))
    back.updater.recover()
    back.updater.run_pending()
    assert back.publisher.states(1) == ["rolled_back"]
    assert back.publisher.last(1).reason == "agent 0.2.0 did not connect and report within 30 s"


def test_a_candidate_running_another_version_never_confirms(layout: InstallLayout, server: ArtifactServer,
                                                            tmp_path: Path) -> None:
    fleet = MiniFleet()
    agent_rig(fleet, server, tmp_path / "data", updater(layout, "a", "0.1.0", Restarts())).deploy(
        fleet.message(agent_release(fleet, server, tmp_path)))
    wrong = agent_rig(fleet, server, tmp_path / "data", updater(layout, "b", "0.1.9", Restarts()))
    wrong.updater.recover()
    wrong.updater.run_pending()
    assert wrong.publisher.messages == [] and layout.target(CONFIRMED) == "a"


def test_a_switch_that_never_happened_is_rolled_back(layout: InstallLayout, server: ArtifactServer,
                                                     tmp_path: Path) -> None:
    fleet = MiniFleet()
    old = agent_rig(fleet, server, tmp_path / "data", updater(layout, "a", "0.1.0", Restarts()))
    old.deploy(fleet.message(agent_release(fleet, server, tmp_path)))
    layout.switch(CURRENT, "a")  # e.g. an operator put the link back by hand
    again = agent_rig(fleet, server, tmp_path / "data", updater(layout, "a", "0.1.0", Restarts()))
    again.updater.recover()
    again.updater.run_pending()
    assert again.publisher.states(1) == ["rolled_back"] and "did not happen" in again.publisher.last(1).reason
    assert layout.read_trial() is None


def test_an_agent_not_installed_a_b_fails_the_deployment(server: ArtifactServer, tmp_path: Path) -> None:
    fleet = MiniFleet()
    rig = agent_rig(fleet, server, tmp_path / "data", None)
    rig.deploy(fleet.message(agent_release(fleet, server, tmp_path)))
    assert rig.publisher.states(1)[-1] == "failed" and "A/B slots" in rig.publisher.last(1).reason


@pytest.mark.parametrize("action", [Action.ROLLBACK, Action.SHADOW])
def test_agent_releases_can_only_be_installed(layout: InstallLayout, server: ArtifactServer, tmp_path: Path,
                                              action: Action) -> None:
    fleet = MiniFleet()
    rig = agent_rig(fleet, server, tmp_path / "data", updater(layout, "a", "0.1.0", Restarts()))
    rig.deploy(fleet.message(agent_release(fleet, server, tmp_path), action=action))
    assert rig.publisher.states(1) == ["notified", "failed"]
    assert "can only be installed" in rig.publisher.last(1).reason and layout.installs == []  # type: ignore[attr-defined]


def test_no_second_update_while_the_agent_is_on_trial(layout: InstallLayout, server: ArtifactServer,
                                                      tmp_path: Path) -> None:
    fleet = MiniFleet()
    layout.switch(CONFIRMED, "b")  # running a, but b is the confirmed one: a is on trial
    rig = agent_rig(fleet, server, tmp_path / "data", updater(layout, "a", "0.1.0", Restarts()))
    rig.deploy(fleet.message(agent_release(fleet, server, tmp_path)))
    assert rig.publisher.states(1)[-1] == "failed" and "on trial" in rig.publisher.last(1).reason
