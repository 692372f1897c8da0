"""Model registry endpoints: upload (streamed, size cap, real parsing), versions, listing, auth."""

import json
import pickle
import threading
from pathlib import Path

from tests.fleet_server.conftest import ONNX_FIXTURE, TFLITE_FIXTURE, Api, admin_headers, build_onnx_model

LINEAGE = {
    "training_data_uri": "s3://bucket/digits.npz",
    "training_data_sha256": "ab" * 32,
    "training_code_ref": "git+https://example.org/repo@abc123",
    "metrics": {"accuracy": 0.97},
    "parent_version": None,
}


def stored_files(api: Api) -> list[Path]:
    root = api.runtime.artifacts.root
    return sorted(path for path in root.rglob("*") if path.is_file())


def test_upload_onnx_returns_schema_and_stores_content_addressed(api: Api) -> None:
    metadata = {"description": "digits classifier", "lineage": LINEAGE}
    response = api.upload(ONNX_FIXTURE, name="digits", metadata=json.dumps(metadata), arch="aarch64, x86_64",
                          min_ram_mb=256)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == "digits" and body["version"] == 1
    assert body["format"] == "onnx" and body["runtime"] == "onnxruntime" and body["precision"] == "fp32"
    assert body["size_bytes"] == ONNX_FIXTURE.stat().st_size
    assert body["inputs"] == [{"name": "input", "dtype": "float32", "shape": [None, 64]}]
    assert body["outputs"] == [{"name": "label", "dtype": "int64", "shape": [None]},
                               {"name": "probabilities", "dtype": "float32", "shape": [None, 10]}]
    assert body["arch"] == ["aarch64", "x86_64"] and body["min_ram_mb"] == 256
    assert body["lineage"]["training_data_sha256"] == "ab" * 32 and body["description"] == "digits classifier"
    stored = api.runtime.artifacts.root / body["sha256"][:2] / body["sha256"]
    assert stored.read_bytes() == ONNX_FIXTURE.read_bytes()


def test_upload_tflite_reads_signature_shapes(api: Api) -> None:
    response = api.upload(TFLITE_FIXTURE, name="digits-tflite", precision="fp32")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["format"] == "tflite" and body["runtime"] == "tflite"
    assert body["inputs"] == [{"name": "serving_default_input:0", "dtype": "float32", "shape": [None, 64]}]
    assert body["outputs"][0]["shape"] == [None, 10]


def test_versions_are_monotonic_per_model(api: Api) -> None:
    versions = [api.upload(name="mono").json()["version"] for _ in range(3)]
    assert versions == [1, 2, 3]
    assert api.upload(name="mono-other").json()["version"] == 1
    listing = api.get("/models/mono/versions").json()
    assert [v["version"] for v in listing] == [1, 2, 3]
    assert api.get("/models/mono").json() == {
        "name": "mono", "created_at": api.get("/models/mono").json()["created_at"], "latest_version": 3,
        "version_count": 3}
    assert api.get("/models/mono/versions/2").json()["version"] == 2
    names = [model["name"] for model in api.get("/models").json()]
    assert "mono" in names and "mono-other" in names


def test_concurrent_uploads_get_distinct_versions(api: Api, tmp_path: Path) -> None:
    paths = [build_onnx_model(tmp_path / f"c{index}.onnx") for index in range(4)]
    results: list[int] = []
    errors: list[str] = []

    def upload(path: Path) -> None:
        response = api.upload(path, name="concurrent")
        if response.status_code == 201:
            results.append(response.json()["version"])
        else:
            errors.append(response.text)

    threads = [threading.Thread(target=upload, args=(path,)) for path in paths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(results) == [1, 2, 3, 4]


def test_not_a_model_is_rejected_and_leaves_nothing_on_disk(api: Api, tmp_path: Path) -> None:
    before = stored_files(api)
    elf = tmp_path / "model.onnx"
    elf.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(200))
    pickled = tmp_path / "model.tflite"
    pickled.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(bytes(range(256)) * 8)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(ONNX_FIXTURE.read_bytes()[:3000])
    expectations = {elf: "ELF", pickled: "pickle", garbage: "ONNX", truncated: "ONNX"}
    for path, word in expectations.items():
        response = api.upload(path, name="bad")
        assert response.status_code == 422, (path.name, response.text)
        assert word in response.json()["detail"]
    assert stored_files(api) == before
    assert api.get("/models/bad").status_code == 404


def test_upload_over_the_cap_is_413(api_factory, tmp_path: Path) -> None:
    small = api_factory(max_upload_bytes=4096)
    big = tmp_path / "big.onnx"
    big.write_bytes(bytes(5000))
    response = small.upload(big, name="big")
    assert response.status_code == 413
    assert "4096" in response.json()["detail"]
    assert [p for p in small.runtime.artifacts.root.rglob("*") if p.is_file()] == []


def test_bad_form_fields_are_422(api: Api) -> None:
    assert api.upload(name="bad name!").status_code == 422
    response = api.upload(name="meta", metadata="{not json")
    assert response.status_code == 422 and "JSON" in response.json()["detail"]
    response = api.upload(name="meta", metadata=json.dumps({"lineage": {"unknown": 1}}))
    assert response.status_code == 422
    assert api.upload(name="meta", min_ram_mb="-5").status_code == 422
    response = api.post("/models", data={"name": "nofile"})
    assert response.status_code == 422
    response = api.post("/models", content=b"plain body", headers={**admin_headers(),
                                                                    "Content-Type": "application/octet-stream"})
    assert response.status_code == 422 and "multipart" in response.json()["detail"]


def test_registry_needs_the_operator_token(api: Api) -> None:
    assert api.get("/models", headers={}).status_code == 401
    assert api.get("/models", headers=admin_headers("wrong")).status_code == 401
    assert api.upload(name="x").status_code == 201  # sanity: the admin token works
    device = api.enroll("model-reader").json()
    response = api.get("/models", headers=admin_headers(device["credential"]))
    assert response.status_code == 403


def test_unknown_models_and_versions_are_404(api: Api) -> None:
    assert api.get("/models/nope").status_code == 404
    assert api.get("/models/nope/versions").status_code == 404
    api.upload(name="known")
    response = api.get("/models/known/versions/99")
    assert response.status_code == 404 and "99" in response.json()["detail"]
    assert api.get("/models/known/versions/abc").status_code == 422
