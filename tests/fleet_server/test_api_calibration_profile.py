"""A model uploaded with calibration data gets its reference profile on the server (no compression job):
the profile is the one the agent's binning builds from the model's predictions on that data, releases
name it in the signed document, drift analysis reads it from the store; bad calibration data is a 422."""

import io
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from agent.binning import build_profile
from agent.inference import ServedModel
from agent.protocol import Release, load_trusted_root, verify_release
from agent.protocol.profile import PredictionKind, ReferenceProfile
from agent.runtimes import load_model
from agent.telemetry.accumulator import TelemetryAccumulator
from fleet_server.client import FleetClient, FleetClientError
from fleet_server.drift.aggregate import ProfileCounts
from fleet_server.drift.profiles import record_from_store
from fleet_server.drift.stats import DriftThresholds
from tests.fleet_server.conftest import ONNX_FIXTURE, Api

CALIBRATION = np.random.default_rng(11).normal(size=(600, 64)).astype(np.float32)


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def upload_with_calibration(api: Api, name: str, calibration: bytes, filename: str = "calibration.npz") -> object:
    with open(ONNX_FIXTURE, "rb") as handle:
        return api.post("/models", data={"name": name}, files={
            "file": (ONNX_FIXTURE.name, handle, "application/octet-stream"),
            "calibration": (filename, calibration, "application/octet-stream")})


def signed_release(api: Api, name: str, version: int) -> Release:
    release = api.release(name, version)
    assert release.status_code == 201, release.text
    root = load_trusted_root(api.enroll(f"{name}-checker").json()["root"], datetime.now(UTC))
    signed, _ = verify_release(root, release.json()["envelope"], datetime.now(UTC))
    return signed


def expected_profile(rows: np.ndarray) -> ReferenceProfile:
    labels = load_model(ONNX_FIXTURE, "onnxruntime").predict({"input": rows})["label"]
    return build_profile(rows, labels, "input", classes=True)


def bin_live(profile: ReferenceProfile, rows: np.ndarray) -> ProfileCounts:
    """Live traffic counted by the agent's accumulator on ``profile``, summed as the server's drift analysis does."""
    model = load_model(ONNX_FIXTURE, "onnxruntime")
    served = ServedModel("digits", 1, "onnx-fp32", "d" * 64, "onnxruntime", model)
    accumulator = TelemetryAccumulator(lambda _served: (profile.sha256(), profile))
    for start in range(0, len(rows), 10):
        batch = rows[start:start + 10]
        accumulator(served, {"input": batch}, model.predict({"input": batch}), 1.0, None)
    [window] = accumulator.drain(close_current=True)
    assert window.features is not None and window.features.profile_sha256 == profile.sha256()
    counts = ProfileCounts(profile)
    assert counts.add([list(row) for row in window.features.counts], list(window.features.missing), None)
    return counts


def test_upload_with_calibration_gives_releases_a_reference_profile(api: Api) -> None:
    response = upload_with_calibration(api, "calibrated", npz(input=CALIBRATION))
    assert response.status_code == 201, response.text
    body = response.json()
    expected = expected_profile(CALIBRATION)
    assert body["reference_profile_sha256"] == expected.sha256()
    stored = api.runtime.artifacts.find(expected.sha256())
    assert stored is not None
    profile = ReferenceProfile.from_bytes(stored.read_bytes())
    assert profile == expected and profile.samples == len(CALIBRATION) and len(profile.features) == 64
    assert profile.predictions is not None and profile.predictions.kind is PredictionKind.CLASSES

    signed = signed_release(api, "calibrated", body["version"])
    assert signed.reference_profile_sha256 == expected.sha256()
    assert [variant.name for variant in signed.variants] == ["onnx-fp32"]  # no compression job: the original

    record = record_from_store(api.runtime.artifacts, expected.sha256())  # how drift analysis loads it
    assert record is not None and record.samples == len(CALIBRATION)
    thresholds = DriftThresholds()
    steady = bin_live(profile, np.random.default_rng(12).normal(size=(600, 64)).astype(np.float32))
    assert steady.samples == 600 and not steady.evaluate(thresholds).drifted
    shifted = bin_live(profile, np.random.default_rng(13).normal(1.5, 1.0, size=(600, 64)).astype(np.float32))
    result = shifted.evaluate(thresholds)
    assert result.drifted and sum(feature.drifted for feature in result.features) > 32


def test_csv_calibration_and_no_calibration(api: Api) -> None:
    rows = CALIBRATION[:300]
    text = "\n".join(",".join(f"{value:.9g}" for value in row) for row in rows).encode()
    response = upload_with_calibration(api, "calibrated-csv", text, filename="calibration.csv")
    assert response.status_code == 201, response.text
    parsed = np.array([[float(f"{value:.9g}") for value in row] for row in rows], dtype=np.float32)
    assert response.json()["reference_profile_sha256"] == expected_profile(parsed).sha256()

    plain = api.upload(ONNX_FIXTURE, name="uncalibrated")
    assert plain.status_code == 201 and plain.json()["reference_profile_sha256"] is None
    assert signed_release(api, "uncalibrated", plain.json()["version"]).reference_profile_sha256 is None


def test_bad_calibration_data_is_rejected_and_nothing_is_registered(api: Api, tmp_path: Path) -> None:
    cases = [
        (npz(input=CALIBRATION[:, :10]), "input"),  # 10 features for a 64-feature input
        (npz(other=CALIBRATION, more=CALIBRATION), "input"),  # no array named after the input
        (b"\x00\x01not data at all\xff" * 10, "calibration"),
        (b"", "empty"),
    ]
    for payload, words in cases:
        response = upload_with_calibration(api, "badly-calibrated", payload)
        assert response.status_code == 422, (payload[:20], response.text)
        assert words in response.json()["detail"].lower(), response.text
    assert api.get("/models/badly-calibrated").status_code == 404
    twice = api.post("/models", data={"name": "badly-calibrated"}, files=[
        ("file", (ONNX_FIXTURE.name, ONNX_FIXTURE.read_bytes(), "application/octet-stream")),
        ("calibration", ("a.npz", npz(input=CALIBRATION), "application/octet-stream")),
        ("calibration", ("b.npz", npz(input=CALIBRATION), "application/octet-stream"))])
    assert twice.status_code == 422 and "more than one 'calibration'" in twice.json()["detail"]


def test_the_client_uploads_calibration_data(api: Api, tmp_path: Path) -> None:
    calibration = tmp_path / "calibration.npy"
    np.save(calibration, CALIBRATION[:200])
    client = FleetClient("http://testserver", "unused")
    client._http = api.client  # the app in process, with the operator token
    api.client.headers.update(api.headers)
    try:
        version = client.upload_model(ONNX_FIXTURE, "calibrated-by-client", calibration=calibration)
        assert version["reference_profile_sha256"] == expected_profile(CALIBRATION[:200]).sha256()
        with pytest.raises(FleetClientError, match="422"):
            client.upload_model(ONNX_FIXTURE, "calibrated-by-client", calibration=ONNX_FIXTURE)
    finally:
        for header in api.headers:
            api.client.headers.pop(header, None)
