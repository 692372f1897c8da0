"""Accumulator counts: feature bins on the profile edges (the shared binning rule), NaNs, range,
predictions and confidence, latency, errors, window boundaries at model changes."""

from collections.abc import Mapping

import numpy as np
import pytest

from agent.binning import bin_counts, build_profile
from agent.errors import InferenceError, InvalidInferenceRequestError
from agent.inference import ServedModel
from agent.protocol.metadata import TensorSpec
from agent.protocol.profile import PredictionKind, ReferenceProfile
from agent.protocol.telemetry import CONFIDENCE_EDGES, LATENCY_EDGES_MS, ModelRef
from agent.telemetry.accumulator import BUFFER_REQUESTS, TelemetryAccumulator

FEATURES = 6


class FakeModel:
    runtime = "onnxruntime"

    def __init__(self, outputs: tuple[TensorSpec, ...]) -> None:
        self.inputs = (TensorSpec("input", "float32", (None, FEATURES)),)
        self.outputs = outputs

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError


CLASSIFIER = (TensorSpec("label", "int64", (None,)), TensorSpec("probabilities", "float32", (None, 3)))
SCORES_ONLY = (TensorSpec("scores", "float32", (None, 3)),)
REGRESSOR = (TensorSpec("value", "float32", (None, 1)),)


def served(outputs: tuple[TensorSpec, ...] = CLASSIFIER, sha: str = "a", version: int = 1) -> ServedModel:
    return ServedModel("model", version, "onnx-fp32", sha * 64, "onnxruntime", FakeModel(outputs))


@pytest.fixture
def data() -> np.ndarray:
    return np.random.default_rng(7).normal(size=(1000, FEATURES)).astype(np.float32)


@pytest.fixture
def profile(data: np.ndarray) -> ReferenceProfile:
    return build_profile(data, (data[:, 0] > 0).astype(np.int64), "input", classes=True)


def lookup_for(profile: ReferenceProfile | None):
    return lambda _served: None if profile is None else (profile.sha256(), profile)


def classifier_outputs(batch: np.ndarray) -> dict[str, np.ndarray]:
    probabilities = np.tile(np.array([[0.05, 0.15, 0.8]], np.float32), (len(batch), 1))
    return {"label": (batch[:, 0] > 0).astype(np.int64), "probabilities": probabilities}


def test_feature_counts_equal_the_shared_binning_rule(data: np.ndarray, profile: ReferenceProfile) -> None:
    live = data[:700] * 1.5 + 0.3
    live[5, 2] = np.nan
    live[9, 4] = 1e6
    accumulator = TelemetryAccumulator(lookup_for(profile))
    model = served()
    for start in range(0, len(live), 7):  # batches of 7 across several buffer flushes
        batch = live[start:start + 7]
        accumulator(model, {"input": batch}, classifier_outputs(batch), 2.0, None)
    [report] = accumulator.drain(close_current=True)
    assert report.features is not None and report.features.profile_sha256 == profile.sha256()
    for index, feature in enumerate(profile.features):
        expected = bin_counts(np.asarray(feature.edges), live[:, index].astype(np.float64))
        assert list(report.features.counts[index]) == expected.tolist()
    assert report.features.missing == (0, 0, 1, 0, 0, 0)
    expected_range = sum(int(c[0] + c[-1]) for c in report.features.counts)
    assert report.quality.out_of_range == expected_range > 0
    assert report.quality.nan == 1
    assert report.requests == 100 and report.errors == 0
    assert sum(report.latency_ms) == 100
    assert report.model == ModelRef("model", 1)


def test_class_counts_and_confidence(data: np.ndarray, profile: ReferenceProfile) -> None:
    accumulator = TelemetryAccumulator(lookup_for(profile))
    model = served()
    for row in data[:BUFFER_REQUESTS + 10]:
        batch = row[None, :]
        accumulator(model, {"input": batch}, classifier_outputs(batch), 1.0, None)
    [report] = accumulator.drain(close_current=True)
    predictions = report.predictions
    assert predictions is not None and predictions.kind is PredictionKind.CLASSES
    positives = int((data[:BUFFER_REQUESTS + 10, 0] > 0).sum())
    assert dict(zip(predictions.labels, predictions.counts, strict=True)) == {
        0.0: BUFFER_REQUESTS + 10 - positives, 1.0: positives}
    assert predictions.confidence is not None
    assert predictions.confidence[np.searchsorted(CONFIDENCE_EDGES, 0.8, side="right")] == BUFFER_REQUESTS + 10


def test_labels_from_scores_and_no_features_without_a_profile(data: np.ndarray) -> None:
    accumulator = TelemetryAccumulator(lookup_for(None))
    model = served(SCORES_ONLY)
    scores = np.array([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]], np.float32)
    accumulator(model, {"input": data[:2]}, {"scores": scores}, 1.0, None)
    [report] = accumulator.drain(close_current=True)
    assert report.features is None
    assert report.predictions is not None
    assert dict(zip(report.predictions.labels, report.predictions.counts, strict=True)) == {0.0: 1, 1.0: 1}


def test_regression_values_on_the_profile_edges(data: np.ndarray) -> None:
    values = data[:, 1].astype(np.float64)
    profile = build_profile(data, values, "input", classes=False)
    accumulator = TelemetryAccumulator(lookup_for(profile))
    accumulator(served(REGRESSOR), {"input": data[:50]}, {"value": data[:50, 1:2]}, 1.0, None)
    [report] = accumulator.drain(close_current=True)
    assert report.predictions is not None and report.predictions.kind is PredictionKind.VALUES
    assert profile.predictions is not None
    expected = bin_counts(np.asarray(profile.predictions.labels_or_edges), data[:50, 1].astype(np.float64))
    assert list(report.predictions.counts) == expected.tolist()


def test_errors_and_schema_violations_add_no_latency_or_bins(data: np.ndarray, profile: ReferenceProfile) -> None:
    accumulator = TelemetryAccumulator(lookup_for(profile))
    model = served()
    accumulator(model, {"input": data[:1]}, classifier_outputs(data[:1]), 3.0, None)
    accumulator(model, {"input": data[:1]}, None, 1.0, InferenceError("runtime failed"))
    accumulator(model, {"input": data[:1, :2]}, None, 0.0, InvalidInferenceRequestError("shape"))
    [report] = accumulator.drain(close_current=True)
    assert (report.requests, report.errors, report.quality.schema_violations) == (3, 2, 1)
    assert sum(report.latency_ms) == 1
    assert report.latency_ms[np.searchsorted(LATENCY_EDGES_MS, 3.0, side="right")] == 1
    assert report.features is not None and sum(report.features.counts[0]) == 1


def test_inputs_are_copied(data: np.ndarray, profile: ReferenceProfile) -> None:
    accumulator = TelemetryAccumulator(lookup_for(profile))
    buffer = np.full((1, FEATURES), 1e9, np.float32)  # far above every edge: overflow bins
    accumulator(served(), {"input": buffer}, classifier_outputs(buffer), 1.0, None)
    buffer[:] = -1e9  # the application reuses its buffer before the accumulator binned it
    [report] = accumulator.drain(close_current=True)
    assert report.features is not None
    assert all(counts[-1] == 1 and counts[0] == 0 for counts in report.features.counts)


def test_a_model_change_finishes_the_window(data: np.ndarray, profile: ReferenceProfile) -> None:
    accumulator = TelemetryAccumulator(lookup_for(profile))
    accumulator(served(sha="a", version=1), {"input": data[:3]}, classifier_outputs(data[:3]), 1.0, None)
    accumulator(served(sha="b", version=2), {"input": data[:2]}, classifier_outputs(data[:2]), 1.0, None)
    finished = accumulator.drain(close_current=False)
    assert [(r.model, r.requests) for r in finished] == [(ModelRef("model", 1), 1)]
    [current] = accumulator.drain(close_current=True)
    assert (current.model, current.requests) == (ModelRef("model", 2), 1)
    assert current.start >= finished[0].end
    [idle] = accumulator.drain(close_current=True)
    assert (idle.model, idle.requests, idle.features is not None) == (ModelRef("model", 2), 0, True)


def test_the_inference_limit_signals_a_full_window(data: np.ndarray) -> None:
    calls = []
    accumulator = TelemetryAccumulator(lookup_for(None), max_inferences=3, on_full=lambda: calls.append(1))
    for _ in range(4):
        accumulator(served(), {"input": data[:1]}, classifier_outputs(data[:1]), 1.0, None)
    assert len(calls) == 2 and accumulator.requests == 4


def test_the_shadow_section_comes_from_the_hook(data: np.ndarray) -> None:
    accumulator = TelemetryAccumulator(lookup_for(None))
    reports = iter([{"candidate": {"name": "model", "version": 2}, "compared": 4, "agreement": 0.75,
                     "serving_p50_ms": 1.0, "candidate_p50_ms": 1.5}, {"compared": "bad"}])
    accumulator.set_shadow_source(lambda: next(reports))
    accumulator(served(), {"input": data[:1]}, classifier_outputs(data[:1]), 1.0, None)
    [first] = accumulator.drain(close_current=True)
    assert first.shadow is not None and first.shadow.agreement == 0.75 and first.shadow.compared == 4
    [second] = accumulator.drain(close_current=True)
    assert second.shadow is None  # a malformed section is dropped, the window is kept


def test_inputs_of_another_dtype_or_shape_count_the_same(data: np.ndarray, profile: ReferenceProfile) -> None:
    """Inputs and outputs in the schema's dtype and sample shape are kept as bytes, others as array copies:
    the counts are the same."""
    live = data[:300]
    reference = TelemetryAccumulator(lookup_for(profile))
    mixed = TelemetryAccumulator(lookup_for(profile))
    model = served()
    for start in range(0, len(live), 3):
        batch = live[start:start + 3]
        reference(model, {"input": batch}, classifier_outputs(batch), 1.0, None)
        odd = batch.astype(np.float64) if start % 2 else batch[:, None, :]  # float64, or [N, 1, F]
        outputs = classifier_outputs(batch)
        if start % 3 == 0:  # scores in another dtype than the schema's
            outputs["probabilities"] = outputs["probabilities"].astype(np.float64)
        mixed(model, {"input": odd}, outputs, 1.0, None)
    [expected], [report] = reference.drain(close_current=True), mixed.drain(close_current=True)
    assert report.features == expected.features and report.quality == expected.quality
    assert report.predictions == expected.predictions and report.predictions is not None
    assert report.features is not None and sum(report.features.counts[0]) == len(live)
