"""Compression through the API: data set uploads, a background job end to end, the release it
produces (passing variants, original last, reference profile hashed into the signed document), and
failures that leave no variant behind."""

import io
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.protocol import load_trusted_root, verify_release
from agent.protocol.profile import ReferenceProfile
from tests.compression import models
from tests.fleet_server.conftest import Api

FAST = {"latency_runs": 3}


def upload_dataset(api: Api, arrays: dict[str, np.ndarray]) -> str:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    response = api.post("/datasets", files={"file": ("data.npz", buffer.getvalue(), "application/octet-stream")})
    assert response.status_code == 201, response.text
    assert response.json()["format"] == "npz"
    return response.json()["sha256"]


def wait_for_job(api: Api, job_id: int, timeout: float = 180.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = api.get(f"/compression-jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed"):
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']} at {job['stage']}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def mlp_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return models.numpy_mlp_onnx(tmp_path_factory.mktemp("api-models") / "mlp.onnx")


@pytest.fixture(scope="module")
def datasets(api: Api) -> tuple[str, str]:
    x_train, _, x_val, y_val = models.split()
    return upload_dataset(api, {"input": x_train[:128]}), upload_dataset(api, {"input": x_val, "labels": y_val})


def test_compress_job_end_to_end_and_release(api: Api, mlp_path: Path, datasets: tuple[str, str]) -> None:
    version = api.upload(mlp_path, name="digits-compressed").json()["version"]
    calibration, validation = datasets
    response = api.post(f"/models/digits-compressed/versions/{version}/compress",
                        json={"calibration_sha256": calibration, "validation_sha256": validation, **FAST})
    assert response.status_code == 202, response.text
    assert response.json()["status"] in ("queued", "running", "succeeded")
    job = wait_for_job(api, response.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"] == 1.0 and job["stage"] == "done"
    names = [variant["name"] for variant in job["variants"]]
    assert sorted(names) == ["onnx-fp16", "onnx-fp32", "onnx-int8-dynamic", "onnx-int8-static"]
    assert names == job["report"]["release_order"] and names[-1] == "onnx-fp32"
    for variant in job["variants"]:
        assert api.runtime.artifacts.find(variant["sha256"]) is not None
    report = api.get(f"/compression-jobs/{job['id']}/report").json()
    assert report == job["report"] and report["evaluation"]["data"] == "validation"
    listing = api.get(f"/models/digits-compressed/versions/{version}/compress").json()
    assert [item["id"] for item in listing] == [job["id"]] and listing[0]["report"] is None

    release = api.release("digits-compressed", version)
    assert release.status_code == 201, release.text
    body = release.json()
    root = load_trusted_root(api.enroll("compression-checker").json()["root"], datetime.now(UTC))
    signed, _ = verify_release(root, body["envelope"], datetime.now(UTC))
    assert [variant.name for variant in signed.variants] == [*names, "onnx-original"]
    assert signed.variants[-1].sha256 == api.get(f"/models/digits-compressed/versions/{version}").json()["sha256"]
    assert {variant.path for variant in signed.variants} == {"model.onnx"}
    assert signed.reference_profile_sha256 == job["profile_sha256"]
    profile_bytes = api.runtime.artifacts.find(job["profile_sha256"]).read_bytes()
    assert ReferenceProfile.from_bytes(profile_bytes).sha256() == job["profile_sha256"]
    assert body["compression"]["job_id"] == job["id"]
    assert body["compression"]["release_order"] == names
    assert api.get(f"/releases/digits-compressed/{version}").json()["compression"] == body["compression"]
    again = api.post(f"/models/digits-compressed/versions/{version}/compress",
                     json={"calibration_sha256": calibration})
    assert again.status_code == 409 and "already released" in again.json()["detail"]


def test_failed_job_leaves_no_variant_and_release_stays_uncompressed(api: Api, mlp_path: Path) -> None:
    version = api.upload(mlp_path, name="digits-bad-data").json()["version"]
    wrong = upload_dataset(api, {"input": np.zeros((16, 10), np.float32)})
    response = api.post(f"/models/digits-bad-data/versions/{version}/compress",
                        json={"calibration_sha256": wrong, **FAST})
    assert response.status_code == 202, response.text
    job = wait_for_job(api, response.json()["id"])
    assert job["status"] == "failed" and job["variants"] == [] and job["report"] is None
    assert "shape [16, 10], the model needs ['N', 64]" in job["error"]
    assert api.get(f"/compression-jobs/{job['id']}/report").status_code == 409
    release = api.release("digits-bad-data", version).json()
    assert [variant["name"] for variant in release["variants"]] == ["onnx-fp32"]
    assert release["envelope"]["signed"]["reference_profile_sha256"] is None and release["compression"] is None


def test_bad_requests_are_refused_up_front(api: Api, mlp_path: Path, datasets: tuple[str, str]) -> None:
    version = api.upload(mlp_path, name="digits-refused").json()["version"]
    path = f"/models/digits-refused/versions/{version}/compress"
    missing = api.post(path, json={"calibration_sha256": "ab" * 32})
    assert missing.status_code == 404 and "no uploaded calibration data set" in missing.json()["detail"]
    wrong_variant = api.post(path, json={"calibration_sha256": datasets[0], "variants": ["tflite-int8"]})
    assert wrong_variant.status_code == 422 and "do not apply to a onnx model" in wrong_variant.json()["detail"]
    bad_method = api.post(path, json={"calibration_sha256": datasets[0], "calibration_method": "kl"})
    assert bad_method.status_code == 422
    assert api.post("/models/nope/versions/1/compress", json={"calibration_sha256": datasets[0]}).status_code == 404
    assert api.get("/compression-jobs/999999").status_code == 404
    garbage = api.post("/datasets", files={"file": ("x.bin", b"\xff\xfe\xfd" * 100, "application/octet-stream")})
    assert garbage.status_code == 422 and "neither .npz, .npy nor UTF-8 CSV" in garbage.json()["detail"]
    assert api.get(path).json() == []


def test_tflite_upload_is_quantized_with_ai_edge_quantizer(api: Api, datasets: tuple[str, str]) -> None:
    from tests.fleet_server.conftest import TFLITE_FIXTURE

    version = api.upload(TFLITE_FIXTURE, name="digits-tflite-compressed").json()["version"]
    response = api.post(f"/models/digits-tflite-compressed/versions/{version}/compress",
                        json={"calibration_sha256": datasets[0], "validation_sha256": datasets[1],
                              "variants": ["tflite-int8", "tflite-fp16"], **FAST})
    assert response.status_code == 202, response.text
    job = wait_for_job(api, response.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert [variant["name"] for variant in job["variants"]] == ["tflite-int8", "tflite-fp16"]
    assert all(variant["runtime"] == "tflite" for variant in job["variants"])
    release = api.release("digits-tflite-compressed", version).json()
    assert [variant["name"] for variant in release["variants"]] == ["tflite-int8", "tflite-fp16", "tflite-original"]


def _insert_job(api: Api, name: str, version: int, status: str, heartbeat_age_s: float) -> int:
    from datetime import timedelta

    from sqlmodel import Session

    from fleet_server.core.types import utcnow
    from fleet_server.models.compression import CompressionJob
    from fleet_server.services import registry

    with Session(api.runtime.engine) as session:
        row = registry.get_version(session, name, version)
        job = CompressionJob(model_version_id=row.id, status=status, calibration_sha256="ab" * 32,
                             heartbeat_at=utcnow() - timedelta(seconds=heartbeat_age_s), owner="elsewhere")
        session.add(job)
        session.commit()
        return job.id


def test_unfinished_job_blocks_release_and_a_dead_one_is_failed(api: Api, mlp_path: Path,
                                                                datasets: tuple[str, str]) -> None:
    version = api.upload(mlp_path, name="digits-busy").json()["version"]
    live_job = _insert_job(api, "digits-busy", version, "running", heartbeat_age_s=0)
    blocked = api.release("digits-busy", version)
    assert blocked.status_code == 409 and f"compression job {live_job}" in blocked.json()["detail"]
    again = api.post(f"/models/digits-busy/versions/{version}/compress", json={"calibration_sha256": datasets[0]})
    assert again.status_code == 409 and "running" in again.json()["detail"]

    other = api.upload(mlp_path, name="digits-dead").json()["version"]
    dead_job = _insert_job(api, "digits-dead", other, "running", heartbeat_age_s=3600)
    shown = api.get(f"/compression-jobs/{dead_job}").json()
    assert shown["status"] == "failed" and "stopped before it finished" in shown["error"]
    response = api.post(f"/models/digits-dead/versions/{other}/compress",
                        json={"calibration_sha256": datasets[0], "variants": ["onnx-fp16"], **FAST})
    assert response.status_code == 202, response.text
    assert wait_for_job(api, response.json()["id"])["status"] == "succeeded"
    assert api.get(f"/compression-jobs/{dead_job}").json()["status"] == "failed"
