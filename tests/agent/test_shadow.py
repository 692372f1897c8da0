"""Shadow deployments on the agent: the candidate next to the served model, its
report, dropping and promoting it, and the shadow runner's bounded queue."""

import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pytest

from agent.inference import ServedModel
from agent.protocol.metadata import Action, Runtime, TensorSpec
from agent.shadow import ShadowRunner
from agent.slots import CURRENT, SHADOW
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
    onnx_variant,
)
from tests.agent.updater_rig import Rig, make_rig

INSTALL_STATES = ["notified", "downloading", "verifying", "installing", "health_check", "succeeded"]
INPUTS = (TensorSpec("x", "float32", (None, 2)),)


class FakeModel:
    runtime = "fake"
    inputs = INPUTS
    outputs = (TensorSpec("label", "int64", (None,)),)

    def __init__(self, answer: int, gate: threading.Event | None = None) -> None:
        self.answer = answer
        self.gate = gate
        self.calls = 0
        self.entered = threading.Event()

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        self.calls += 1
        return {"label": np.full(len(inputs["x"]), self.answer, dtype=np.int64)}


def served(name: str, version: int, model: FakeModel) -> ServedModel:
    return ServedModel(name, version, "fake", f"{version:064x}", "fake", model)


def ask(runner: ShadowRunner, serving: ServedModel, rows: int = 1) -> None:
    inputs = {"x": np.zeros((rows, 2), dtype=np.float32)}
    runner.observe(serving, inputs, serving.model.predict(inputs), 1.0, None)


def wait_compared(runner: ShadowRunner, calls: int, model: FakeModel) -> None:
    assert runner.wait_idle(10)
    assert model.calls == calls


# -- the runner ----------------------------------------------------------------


def test_the_report_counts_agreement_and_both_latencies() -> None:
    runner = ShadowRunner()
    assert runner.take_report() is None
    serving, candidate_model = served("digits", 1, FakeModel(3)), FakeModel(3)
    runner.set_candidate(served("digits", 2, candidate_model))
    try:
        for _ in range(3):
            ask(runner, serving, rows=2)
        wait_compared(runner, 3, candidate_model)
        report = runner.take_report()
    finally:
        runner.stop()
    assert report is not None
    assert report == {"candidate": {"name": "digits", "version": 2}, "compared": 6, "agreement": 1.0,
                      "serving_p50_ms": 1.0, "candidate_p50_ms": report["candidate_p50_ms"]}
    assert report["candidate_p50_ms"] >= 0


def test_a_disagreeing_candidate_and_a_new_window() -> None:
    runner = ShadowRunner()
    serving, candidate_model = served("digits", 1, FakeModel(3)), FakeModel(4)
    runner.set_candidate(served("digits", 2, candidate_model))
    try:
        ask(runner, serving, rows=4)
        wait_compared(runner, 1, candidate_model)
        assert runner.take_report()["agreement"] == 0.0  # type: ignore[index]
        assert runner.take_report() is None  # a new window: nothing compared yet
    finally:
        runner.stop()


def test_a_full_queue_drops_samples_instead_of_blocking_the_request() -> None:
    gate = threading.Event()
    runner = ShadowRunner(queue_size=2)
    serving, candidate_model = served("digits", 1, FakeModel(1)), FakeModel(1, gate)
    runner.set_candidate(served("digits", 2, candidate_model))
    try:
        ask(runner, serving)
        assert candidate_model.entered.wait(10)
        for _ in range(9):  # the worker holds one, the queue two: the rest are dropped, not waited for
            ask(runner, serving)
        assert runner.last_window_stats() == (7, 0)
        gate.set()
        wait_compared(runner, 3, candidate_model)
        report = runner.take_report()
    finally:
        runner.stop()
    assert report is not None and report["compared"] == 3


def test_nothing_is_compared_without_a_candidate_or_when_the_candidate_is_served() -> None:
    runner = ShadowRunner()
    model = FakeModel(1)
    ask(runner, served("digits", 1, model))
    runner.set_candidate(served("digits", 1, FakeModel(1)))  # same sha256 as the served model
    try:
        ask(runner, served("digits", 1, model))
        assert runner.take_report() is None
    finally:
        runner.stop()


# -- shadow directives through the updater -----------------------------------------


@pytest.fixture
def server() -> Iterator[ArtifactServer]:
    with ArtifactServer() as server:
        yield server


@pytest.fixture
def rig(server: ArtifactServer, tmp_path: Path) -> Rig:
    rig = make_rig(MiniFleet(), server, tmp_path / "agent")
    rig.runner.shadow = ShadowRunner()
    rig.service.add_observer(rig.runner.shadow.observe)
    yield rig
    rig.runner.shadow.stop()


def onnx_release(rig: Rig, version: int, **options: object) -> dict:
    data = distinct_onnx(f"v{version}")
    rig.server.add(data)
    return rig.fleet.release((onnx_variant(data),), version=version, **options)  # type: ignore[arg-type]


def serve_traffic(rig: Rig, requests: int) -> list[int]:
    labels: list[int] = []
    for _ in range(requests):
        labels = rig.service.predict({"input": np.load(SAMPLE)})["label"].tolist()
    return labels


def test_a_shadow_candidate_runs_next_to_the_served_model(rig: Rig) -> None:
    rig.deploy(rig.fleet.message(onnx_release(rig, 1)))
    rig.deploy(rig.fleet.message(onnx_release(rig, 2), action=Action.SHADOW))

    assert rig.publisher.states(2) == INSTALL_STATES
    assert rig.service.resolve().version == 1
    assert rig.slots.read(CURRENT).release_version == 1  # type: ignore[union-attr]
    assert rig.slots.read(SHADOW).release_version == 2  # type: ignore[union-attr]
    assert serve_traffic(rig, 5) == np.load(LABELS).tolist()
    shadow = rig.runner.shadow
    assert shadow is not None
    assert shadow.wait_idle(30)
    report = shadow.take_report()
    assert report is not None and report["candidate"] == {"name": "digits", "version": 2}
    assert report["compared"] == 5 * len(np.load(SAMPLE))
    assert report["agreement"] == 1.0  # the same network with other bytes


def test_dropping_the_shadow_removes_the_candidate(rig: Rig) -> None:
    rig.deploy(rig.fleet.message(onnx_release(rig, 1)))
    candidate = onnx_release(rig, 2)
    rig.deploy(rig.fleet.message(candidate, action=Action.SHADOW))

    rig.deploy(rig.fleet.message(candidate, action=Action.DROP_SHADOW))

    assert rig.publisher.states(3) == ["notified", "succeeded"]
    assert rig.slots.read(SHADOW) is None and not (rig.slots.root / SHADOW).exists()
    assert rig.runner.shadow.candidate() is None  # type: ignore[union-attr]
    assert rig.service.resolve().version == 1
    assert StateStore(rig.data_dir).load().state is State.SUCCEEDED


def test_promoting_the_candidate_installs_it_and_ends_the_shadow(rig: Rig) -> None:
    rig.deploy(rig.fleet.message(onnx_release(rig, 1)))
    candidate = onnx_release(rig, 2)
    rig.deploy(rig.fleet.message(candidate, action=Action.SHADOW))

    rig.deploy(rig.fleet.message(candidate))

    assert rig.publisher.states(3) == INSTALL_STATES
    assert rig.service.resolve().version == 2
    assert rig.slots.read(SHADOW) is None
    assert rig.runner.shadow.candidate() is None  # type: ignore[union-attr]


def test_a_candidate_with_other_inputs_fails_and_leaves_nothing_behind(rig: Rig) -> None:
    rig.deploy(rig.fleet.message(onnx_release(rig, 1)))
    data = TFLITE_MODEL.read_bytes()
    rig.server.add(data)
    tflite = rig.fleet.release((onnx_variant(data, name="tflite-fp32", runtime=Runtime.TFLITE, path="model.tflite"),),
                               version=2, inputs=TFLITE_INPUTS, outputs=TFLITE_OUTPUTS)

    rig.deploy(rig.fleet.message(tflite, action=Action.SHADOW))

    assert rig.publisher.states(2)[-1] == "failed"
    assert "differ from the served model" in rig.publisher.last(2).reason
    assert rig.slots.read(SHADOW) is None and rig.runner.shadow.candidate() is None  # type: ignore[union-attr]
    assert rig.service.resolve().version == 1


def test_a_shadow_needs_an_installed_model(rig: Rig) -> None:
    rig.deploy(rig.fleet.message(onnx_release(rig, 1), action=Action.SHADOW))
    assert rig.publisher.states(1)[-1] == "failed"
    assert "nothing to shadow" in rig.publisher.last(1).reason
    assert rig.slots.read(SHADOW) is None


def test_the_shadow_slot_is_loaded_again_after_a_restart(rig: Rig, server: ArtifactServer, tmp_path: Path) -> None:
    rig.deploy(rig.fleet.message(onnx_release(rig, 1)))
    rig.deploy(rig.fleet.message(onnx_release(rig, 2), action=Action.SHADOW))
    rig.runner.shadow.stop()  # type: ignore[union-attr]

    again = make_rig(rig.fleet, server, rig.data_dir)
    again.runner.shadow = ShadowRunner()
    try:
        again.updater.recover()
        again.runner.load_shadow_slot()
        candidate = again.runner.shadow.candidate()
        assert candidate is not None and candidate.version == 2
    finally:
        again.runner.shadow.stop()
