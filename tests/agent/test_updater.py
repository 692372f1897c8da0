"""The update flow end to end: real signatures, a local artifact server, real models, a fake publisher."""

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from agent.protocol.keys import generate_private_key
from agent.protocol.metadata import Action, Runtime, TensorSpec
from agent.slots import CURRENT, PREVIOUS
from agent.state_store import StateStore
from agent.statemachine import State
from tests.agent.artifact_server import ArtifactServer
from tests.agent.signing import (
    LABELS,
    SAMPLE,
    TFLITE_INPUTS,
    TFLITE_MODEL,
    TFLITE_OUTPUTS,
    MiniFleet,
    distinct_onnx,
    now,
    onnx_variant,
)
from tests.agent.updater_rig import Rig, make_rig

INSTALL_STATES = ["notified", "downloading", "verifying", "installing", "health_check", "succeeded"]
NOT_ONNX = TFLITE_MODEL.read_bytes()  # an artifact onnxruntime cannot load


@pytest.fixture
def server() -> Iterator[ArtifactServer]:
    with ArtifactServer() as server:
        yield server


@pytest.fixture
def fleet() -> MiniFleet:
    return MiniFleet()


@pytest.fixture
def rig(fleet: MiniFleet, server: ArtifactServer, tmp_path: Path) -> Rig:
    return make_rig(fleet, server, tmp_path / "agent")


def onnx_release(rig: Rig, version: int, data: bytes | None = None, **options: object) -> dict:
    data = distinct_onnx(f"v{version}") if data is None else data
    rig.server.add(data)
    return rig.fleet.release((onnx_variant(data),), version=version, **options)  # type: ignore[arg-type]


def labels(rig: Rig) -> list[int]:
    return rig.service.predict({"input": np.load(SAMPLE)})["label"].tolist()


def test_install_runs_every_state_and_serves_the_model(rig: Rig) -> None:
    rig.deploy(rig.fleet.message(onnx_release(rig, 1)))

    assert rig.publisher.states(1) == INSTALL_STATES
    final = rig.publisher.last(1)
    assert (final.release_name, final.release_version, final.variant, final.reason) == ("digits", 1, "onnx-fp32", None)
    assert labels(rig) == np.load(LABELS).tolist()
    current = rig.slots.read(CURRENT)
    assert current is not None and current.release_version == 1 and current.sequence == 1
    record = StateStore(rig.data_dir).load()
    assert (record.state, record.sequence, record.last_accepted_sequence) == (State.SUCCEEDED, 1, 1)
    assert record.directive is None
    assert list((rig.data_dir / "downloads").iterdir()) == []


def test_second_install_keeps_the_first_as_previous(rig: Rig) -> None:
    rig.deploy(rig.fleet.message(onnx_release(rig, 1)))
    rig.deploy(rig.fleet.message(onnx_release(rig, 2)))
    assert rig.publisher.states(2) == INSTALL_STATES
    assert rig.slots.read(CURRENT).release_version == 2  # type: ignore[union-attr]
    assert rig.slots.read(PREVIOUS).release_version == 1  # type: ignore[union-attr]
    assert rig.service.resolve().version == 2


def test_a_replayed_directive_is_ignored_silently(rig: Rig) -> None:
    payload = rig.fleet.message(onnx_release(rig, 1))
    rig.deploy(payload)
    count = len(rig.publisher.messages)
    rig.deploy(payload)
    assert len(rig.publisher.messages) == count
    assert rig.tracker.state is State.SUCCEEDED


def test_redeploying_the_same_release_with_a_new_sequence_succeeds(rig: Rig) -> None:
    release = onnx_release(rig, 1)
    rig.deploy(rig.fleet.message(release))
    rig.deploy(rig.fleet.message(release))
    assert rig.publisher.states(2) == INSTALL_STATES
    assert rig.slots.read(PREVIOUS) is None  # nothing was switched: the artifact already is current


def test_a_forged_directive_is_rejected_and_changes_nothing(rig: Rig) -> None:
    rig.deploy(rig.fleet.message(onnx_release(rig, 1)))
    forged = rig.fleet.message(onnx_release(rig, 2), sequence=99, key=generate_private_key())
    rig.deploy(forged)

    rejected = rig.publisher.last(99)
    assert rejected.state == "rejected" and rejected.reason.startswith("UnknownSignerError: ")
    record = StateStore(rig.data_dir).load()
    assert record.state is State.REJECTED and record.last_accepted_sequence == 1
    assert rig.service.resolve().version == 1
    rig.deploy(rig.fleet.message(onnx_release(rig, 2)))  # sequence 2 still verifies
    assert rig.publisher.states(2) == INSTALL_STATES


def test_garbage_payload_is_rejected_with_the_error_class(rig: Rig) -> None:
    rig.deploy(b"{not json")
    message = rig.publisher.messages[-1]
    assert (message.state, message.sequence) == ("rejected", 0)
    assert message.reason.startswith("MalformedDocumentError")


def test_an_expired_directive_is_rejected(rig: Rig) -> None:
    rig.deploy(rig.fleet.message(onnx_release(rig, 1), expires_in=timedelta(seconds=-10)))
    assert rig.publisher.states(1) == ["rejected"]
    assert rig.publisher.last(1).reason.startswith("ExpiredError")


def test_directives_are_rejected_once_the_trusted_root_expired(server: ArtifactServer, tmp_path: Path) -> None:
    fleet = MiniFleet(root_expires=now() + timedelta(seconds=1))
    rig = make_rig(fleet, server, tmp_path / "agent")
    payload = fleet.message(onnx_release(rig, 1))
    rig.updater.accept(payload, now=now() + timedelta(seconds=5))
    assert rig.publisher.states(1) == ["rejected"]
    assert rig.publisher.last(1).reason.startswith("ExpiredError: the trusted root expired")


def test_a_forged_directive_during_a_deployment_is_reported_without_disturbing_it(rig: Rig) -> None:
    first = onnx_release(rig, 1)
    rig.server.faults.chunk_delay_s = 2.0
    rig.server.faults.slow_blobs = {first["signed"]["variants"][0]["sha256"]}
    rig.updater.start()
    try:
        rig.updater.submit(rig.fleet.message(first))
        rig.publisher.wait_for(1, "downloading")
        rig.updater.submit(rig.fleet.message(onnx_release(rig, 2), sequence=50, key=generate_private_key()))
        rig.publisher.wait_for(50, "rejected")
        rig.server.faults.chunk_delay_s = 0.0
        rig.publisher.wait_for(1, "succeeded")
    finally:
        rig.updater.stop()
    assert rig.publisher.states(1) == INSTALL_STATES
    record = StateStore(rig.data_dir).load()
    assert (record.state, record.sequence, record.last_accepted_sequence) == (State.SUCCEEDED, 1, 1)


def test_a_release_without_a_fitting_variant_is_rejected(fleet: MiniFleet, server: ArtifactServer,
                                                          tmp_path: Path) -> None:
    rig = make_rig(fleet, server, tmp_path / "agent", runtimes=("onnxruntime",))
    data = TFLITE_MODEL.read_bytes()
    server.add(data)
    release = fleet.release((onnx_variant(data, "tflite-fp32", Runtime.TFLITE, "model.tflite"),),
                            inputs=TFLITE_INPUTS, outputs=TFLITE_OUTPUTS)
    rig.deploy(fleet.message(release))
    assert rig.publisher.states(1) == ["rejected"]
    assert rig.publisher.last(1).reason.startswith("NoCompatibleVariantError")


def test_a_corrupted_artifact_is_rejected_and_nothing_installed(rig: Rig) -> None:
    rig.server.faults.flip_byte = 500
    rig.deploy(rig.fleet.message(onnx_release(rig, 1)))
    assert rig.publisher.states(1) == ["notified", "downloading", "verifying", "rejected"]
    assert rig.publisher.last(1).reason.startswith("ArtifactMismatchError")
    assert rig.slots.read(CURRENT) is None and not rig.service.ready
    assert list((rig.data_dir / "downloads").iterdir()) == []


def test_a_download_cut_in_the_middle_resumes(rig: Rig) -> None:
    rig.server.faults.cut_after_bytes = 3000
    rig.deploy(rig.fleet.message(onnx_release(rig, 1)))
    assert rig.publisher.states(1) == INSTALL_STATES
    assert rig.server.range_headers()[0] is None
    assert rig.server.range_headers()[1].startswith("bytes=") and rig.server.range_headers()[1] != "bytes=0-"


def test_an_unavailable_artifact_fails_with_the_reason(rig: Rig) -> None:
    release = rig.fleet.release((onnx_variant(b"never uploaded"),))
    rig.deploy(rig.fleet.message(release))
    assert rig.publisher.states(1) == ["notified", "downloading", "failed"]
    assert "HTTP 404" in rig.publisher.last(1).reason


def test_a_failed_health_check_restores_the_previous_model(rig: Rig) -> None:
    rig.deploy(rig.fleet.message(onnx_release(rig, 1)))
    rig.deploy(rig.fleet.message(onnx_release(rig, 2, NOT_ONNX)))
    assert rig.publisher.states(2) == ["notified", "downloading", "verifying", "installing", "health_check",
                                       "rolled_back"]
    reason = rig.publisher.last(2).reason
    assert reason.startswith("ModelLoadError") and reason.endswith("restored digits v1")
    assert rig.slots.read(CURRENT).release_version == 1  # type: ignore[union-attr]
    assert rig.slots.read(PREVIOUS) is None
    assert rig.service.resolve().version == 1 and labels(rig) == np.load(LABELS).tolist()


def test_outputs_that_differ_from_the_release_schema_roll_back(rig: Rig) -> None:
    rig.deploy(rig.fleet.message(onnx_release(rig, 1)))
    rig.deploy(rig.fleet.message(onnx_release(rig, 2, outputs=(TensorSpec("probabilities", "float32", (None, 7)),))))
    assert rig.publisher.states(2)[-1] == "rolled_back"
    assert rig.publisher.last(2).reason.startswith("HealthCheckError: output probabilities has shape [1, 10]")
    assert rig.service.resolve().version == 1


def test_a_failed_first_install_leaves_no_model(rig: Rig) -> None:
    rig.deploy(rig.fleet.message(onnx_release(rig, 1, NOT_ONNX)))
    assert rig.publisher.states(1)[-1] == "rolled_back"
    assert rig.publisher.last(1).reason.endswith("no previous model to restore")
    assert rig.slots.read(CURRENT) is None


def test_a_slow_model_fails_the_latency_bound(fleet: MiniFleet, server: ArtifactServer, tmp_path: Path) -> None:
    rig = make_rig(fleet, server, tmp_path / "agent", latency_bound_ms=0.000001)
    rig.deploy(fleet.message(onnx_release(rig, 1)))
    assert rig.publisher.states(1)[-1] == "rolled_back"
    assert "bound is" in rig.publisher.last(1).reason


def test_rollback_directive_restores_and_checks_the_previous_model(rig: Rig) -> None:
    rig.deploy(rig.fleet.message(onnx_release(rig, 1)))
    v2 = onnx_release(rig, 2)
    rig.deploy(rig.fleet.message(v2))
    assert rig.service.resolve().version == 2

    rig.deploy(rig.fleet.message(v2, action=Action.ROLLBACK))

    assert rig.publisher.states(3) == ["notified", "installing", "health_check", "rolled_back"]
    assert rig.publisher.last(3).reason == "restored digits v1"
    assert rig.slots.read(CURRENT).release_version == 1  # type: ignore[union-attr]
    assert rig.slots.read(PREVIOUS) is None
    assert rig.service.resolve().version == 1
    assert StateStore(rig.data_dir).load().state is State.ROLLED_BACK


def test_rollback_without_a_previous_model_fails(rig: Rig) -> None:
    release = onnx_release(rig, 1)
    rig.deploy(rig.fleet.message(release))
    rig.deploy(rig.fleet.message(release, action=Action.ROLLBACK))
    assert rig.publisher.states(2) == ["notified", "failed"]
    assert "no previous model" in rig.publisher.last(2).reason
    assert rig.service.resolve().version == 1


def test_a_queued_older_directive_is_superseded(rig: Rig) -> None:
    first = rig.fleet.message(onnx_release(rig, 1))
    second = rig.fleet.message(onnx_release(rig, 2))
    rig.updater.accept(first)
    rig.updater.accept(second)
    rig.updater.run_pending()
    assert rig.publisher.states(1) == ["notified", "failed"]
    assert rig.publisher.last(1).reason == "superseded by directive 2"
    assert rig.publisher.states(2) == INSTALL_STATES


def test_a_newer_directive_cancels_a_running_download(rig: Rig) -> None:
    slow = onnx_release(rig, 1)
    rig.server.faults.chunk_delay_s = 2.0  # 4 KiB every 2 s: this download outlasts the test
    rig.server.faults.slow_blobs = {slow["signed"]["variants"][0]["sha256"]}
    rig.updater.start()
    try:
        rig.updater.submit(rig.fleet.message(slow))
        rig.publisher.wait_for(1, "downloading")
        rig.updater.submit(rig.fleet.message(onnx_release(rig, 2)))
        assert rig.publisher.wait_for(1, "failed").reason == "superseded by directive 2"
        rig.publisher.wait_for(2, "succeeded")
    finally:
        rig.updater.stop()
    assert rig.publisher.states(1) == ["notified", "downloading", "failed"]
    assert rig.service.resolve().version == 2


def test_directives_through_the_threads_in_order(rig: Rig) -> None:
    rig.updater.start()
    try:
        rig.updater.submit(rig.fleet.message(onnx_release(rig, 1)))
        rig.publisher.wait_for(1, "succeeded")
    finally:
        rig.updater.stop()
    assert rig.publisher.states(1) == INSTALL_STATES
