"""Restarting mid-deployment: the agent resumes or fails cleanly and always ends with a current slot.

A restart is simulated by building a fresh rig (new objects, same data directory),
as a new process would after a power cut.
"""

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.protocol.messages import DirectiveMessage
from agent.slots import CURRENT, PREVIOUS, STAGING
from agent.state_store import StateStore
from agent.statemachine import Event, State
from tests.agent.artifact_server import ArtifactServer
from tests.agent.signing import MiniFleet, distinct_onnx, onnx_variant
from tests.agent.updater_rig import Rig, make_rig


@pytest.fixture
def server() -> Iterator[ArtifactServer]:
    with ArtifactServer() as server:
        yield server


@pytest.fixture
def fleet() -> MiniFleet:
    return MiniFleet()


def release(rig: Rig, version: int) -> dict:
    data = distinct_onnx(f"v{version}")
    rig.server.add(data)
    return rig.fleet.release((onnx_variant(data),), version=version)


def begin(rig: Rig, payload: bytes, *events: Event) -> None:
    """Accept a directive and drive the state machine by hand up to where the 'power cut' happens."""
    job = rig.updater.accept(payload)
    assert job is not None
    rig.tracker.begin(job.sequence, **job.begin_fields())
    for event in events:
        rig.tracker.advance(job.sequence, event)


def restart(rig: Rig) -> Rig:
    again = make_rig(rig.fleet, rig.server, rig.data_dir)
    again.updater.recover()
    again.updater.run_pending()
    return again


def test_restart_while_downloading_resumes_with_range(fleet: MiniFleet, server: ArtifactServer,
                                                      tmp_path: Path) -> None:
    rig = make_rig(fleet, server, tmp_path)
    v1 = release(rig, 1)
    begin(rig, fleet.message(v1), Event.START_DOWNLOAD)
    variant = onnx_variant(distinct_onnx("v1"))
    rig.downloader.downloads_dir.mkdir(parents=True)
    rig.downloader.part_path(variant.sha256).write_bytes(distinct_onnx("v1")[:4000])

    after = restart(rig)

    assert after.publisher.states(1) == ["verifying", "installing", "health_check", "succeeded"]
    assert server.range_headers() == ["bytes=4000-"]
    assert after.slots.read(CURRENT).release_version == 1  # type: ignore[union-attr]


def test_restart_when_notified_starts_the_download(fleet: MiniFleet, server: ArtifactServer,
                                                   tmp_path: Path) -> None:
    rig = make_rig(fleet, server, tmp_path)
    begin(rig, fleet.message(release(rig, 1)))
    after = restart(rig)
    assert after.publisher.states(1) == ["downloading", "verifying", "installing", "health_check", "succeeded"]


def test_restart_while_verifying_checks_the_finished_download(fleet: MiniFleet, server: ArtifactServer,
                                                              tmp_path: Path) -> None:
    rig = make_rig(fleet, server, tmp_path)
    begin(rig, fleet.message(release(rig, 1)), Event.START_DOWNLOAD, Event.DOWNLOADED)
    data = distinct_onnx("v1")
    rig.downloader.downloads_dir.mkdir(parents=True)
    rig.downloader.part_path(onnx_variant(data).sha256).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    after = restart(rig)
    assert after.publisher.states(1) == ["rejected"]
    assert after.publisher.last(1).reason.startswith("ArtifactMismatchError")


class PowerCut(Exception):
    pass


@pytest.mark.parametrize("renames_before_cut", [0, 1, 2])
def test_restart_mid_switch_ends_with_the_new_model_checked(fleet: MiniFleet, server: ArtifactServer,
                                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            renames_before_cut: int) -> None:
    rig = make_rig(fleet, server, tmp_path)
    rig.deploy(fleet.message(release(rig, 1)))
    rig.deploy(fleet.message(release(rig, 2)))
    real_rename = os.rename
    renames = []

    def rename(source: object, target: object) -> None:
        if len(renames) == renames_before_cut:
            raise PowerCut()
        renames.append((source, target))
        real_rename(source, target)  # type: ignore[arg-type]

    monkeypatch.setattr(rig.slots, "promote", _cut_promote(rig, monkeypatch, rename))
    with pytest.raises(SystemExit):
        rig.deploy(fleet.message(release(rig, 3)))
    monkeypatch.undo()
    assert rig.tracker.state is State.INSTALLING

    after = restart(rig)

    assert after.publisher.states(3) == ["health_check", "succeeded"]
    current, previous = after.slots.read(CURRENT), after.slots.read(PREVIOUS)
    assert current is not None and current.release_version == 3
    assert previous is None or previous.release_version == 2
    assert after.service.resolve().version == 3
    assert not (after.slots.root / STAGING).exists()


def _cut_promote(rig: Rig, monkeypatch: pytest.MonkeyPatch, rename: object) -> object:
    """promote() with renames that stop at the power cut; the cut propagates like a dead process would."""
    real_promote = rig.slots.promote

    def promote() -> object:
        monkeypatch.setattr("agent.slots.os.rename", rename)
        try:
            return real_promote()
        except PowerCut:
            raise SystemExit("power cut") from None

    return promote


def crash_back_into_health_check(rig: Rig, payload: bytes) -> None:
    """Rewrite state.json as it was when health_check had just been persisted for ``payload``."""
    message = DirectiveMessage.decode(payload)
    store = StateStore(rig.data_dir)
    store.save(store.load().evolve(state=State.HEALTH_CHECK, directive=message.directive, release=message.release))


def test_restart_during_the_health_check_reruns_it(fleet: MiniFleet, server: ArtifactServer,
                                                   tmp_path: Path) -> None:
    rig = make_rig(fleet, server, tmp_path)
    rig.deploy(fleet.message(release(rig, 1)))
    payload = fleet.message(release(rig, 2))
    rig.deploy(payload)
    crash_back_into_health_check(rig, payload)

    after = restart(rig)

    assert after.publisher.states(2) == ["succeeded"]
    assert after.service.resolve().version == 2


def test_restart_after_a_health_check_rollback_reports_rolled_back(fleet: MiniFleet, server: ArtifactServer,
                                                                   tmp_path: Path) -> None:
    rig = make_rig(fleet, server, tmp_path)
    rig.deploy(fleet.message(release(rig, 1)))
    payload = fleet.message(release(rig, 2))
    rig.deploy(payload)
    rig.slots.roll_back()  # the health check failed and restored v1; then the power went
    crash_back_into_health_check(rig, payload)

    after = restart(rig)

    assert after.publisher.states(2) == ["rolled_back"]
    assert after.slots.read(CURRENT).release_version == 1  # type: ignore[union-attr]


def test_a_stored_directive_that_no_longer_verifies_fails_cleanly(fleet: MiniFleet, server: ArtifactServer,
                                                                  tmp_path: Path) -> None:
    rig = make_rig(fleet, server, tmp_path)
    rig.deploy(fleet.message(release(rig, 1)))
    begin(rig, fleet.message(release(rig, 2)), Event.START_DOWNLOAD)
    record = StateStore(tmp_path).load()
    tampered = json.loads(json.dumps(record.directive))
    tampered["signed"]["sequence"] = 3
    StateStore(tmp_path).save(record.evolve(directive=tampered))

    after = restart(rig)

    assert after.publisher.states(2) == ["failed"]
    assert after.publisher.last(2).reason.startswith("cannot resume after restart: StateFileError")
    assert after.slots.read(CURRENT).release_version == 1  # type: ignore[union-attr]


def test_stop_pauses_a_download_that_the_next_start_resumes(fleet: MiniFleet, server: ArtifactServer,
                                                            tmp_path: Path) -> None:
    rig = make_rig(fleet, server, tmp_path)
    server.faults.chunk_delay_s = 2.0
    rig.updater.start()
    rig.updater.submit(fleet.message(release(rig, 1)))
    rig.publisher.wait_for(1, "downloading")
    rig.updater.stop()
    assert StateStore(tmp_path).load().state is State.DOWNLOADING
    server.faults.chunk_delay_s = 0.0

    after = restart(rig)

    assert after.publisher.states(1) == ["verifying", "installing", "health_check", "succeeded"]
