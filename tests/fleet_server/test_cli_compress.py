"""``edgefleet model push|compress|jobs|compress-local`` through typer's CliRunner against a real server
(uvicorn in a thread, loopback HTTP): the comparison table, --release, and one-line errors that leave
nothing registered."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from fleet_server.cli import app
from tests.compression import models
from tests.fleet_server.conftest import ADMIN_TOKEN
from tests.fleet_server.test_cli_operator import LiveServer

runner = CliRunner()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("cli-compress-server") / "data").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("cli-compress-files")
    calibration, validation = models.save_data(directory, calibration_rows=100)
    wrong = directory / "wrong.npy"
    np.save(wrong, np.zeros((5, 63), np.float32))
    return {"model": models.numpy_mlp_onnx(directory / "mlp.onnx"), "calibration": calibration,
            "validation": validation, "wrong": wrong}


def invoke(live: LiveServer, *args: str) -> object:
    return runner.invoke(app, [*args, "--server", live.url, "--token", ADMIN_TOKEN])


def test_push_compresses_prints_the_table_and_releases(live: LiveServer, files: dict[str, Path]) -> None:
    result = invoke(live, "model", "push", str(files["model"]), "--name", "cli-digits", "--calibration",
                    str(files["calibration"]), "--validation", str(files["validation"]), "--latency-runs", "3",
                    "--variants", "onnx-int8-static,onnx-fp16", "--release")
    assert result.exit_code == 0, result.output
    assert "variant" in result.output and "onnx-int8-static" in result.output and "passed" in result.output
    assert "release order: onnx-int8-static, onnx-fp16, then the original" in result.output
    assert "released cli-digits v1" in result.output
    assert "onnx-int8-static, onnx-fp16, onnx-original" in result.output

    jobs = invoke(live, "model", "jobs", "cli-digits@1")
    assert jobs.exit_code == 0 and "succeeded" in jobs.output
    job_id = httpx.get(f"{live.url}/api/v1/models/cli-digits/versions/1/compress",
                       headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()[0]["id"]
    detail = invoke(live, "model", "jobs", "cli-digits@1", "--job", str(job_id))
    assert detail.exit_code == 0 and "onnx-fp16" in detail.output


def test_push_with_wrong_data_registers_nothing(live: LiveServer, files: dict[str, Path]) -> None:
    result = invoke(live, "model", "push", str(files["model"]), "--name", "cli-wrong", "--calibration",
                    str(files["wrong"]))
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("error: the calibration data for input 'input' has shape [5, 63]")
    assert lines[1].startswith("hint: ") and len(lines) == 2
    response = httpx.get(f"{live.url}/api/v1/models/cli-wrong", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 404


def test_compress_usage_errors(live: LiveServer, files: dict[str, Path]) -> None:
    bad_ref = invoke(live, "model", "compress", "no-version", "--calibration", str(files["calibration"]))
    assert bad_ref.exit_code == 2 and "is not NAME@VERSION" in bad_ref.output
    unknown = invoke(live, "model", "compress", "ghost@1", "--calibration", str(files["calibration"]))
    assert unknown.exit_code == 1 and "ghost" in unknown.output


def test_compress_local_writes_the_variants_without_a_server(files: dict[str, Path], tmp_path: Path) -> None:
    result = runner.invoke(app, ["model", "compress-local", str(files["model"]), "--out", str(tmp_path / "out"),
                                 "--calibration", str(files["calibration"]), "--variants", "onnx-int8-dynamic",
                                 "--latency-runs", "2"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "variants" / "onnx-int8-dynamic.onnx").is_file()
    assert (tmp_path / "out" / "report.json").is_file() and (tmp_path / "out" / "reference_profile.json").is_file()
    assert "release order onnx-int8-dynamic" in result.output
