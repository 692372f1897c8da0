"""Fixtures for the compression tests: small models built once per session, fast settings."""

from pathlib import Path

import pytest

from compression.settings import CompressionSettings
from tests.compression import models

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "models"
FAST = CompressionSettings(latency_runs=5, latency_warmup=1)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("compression-models")


@pytest.fixture(scope="session")
def mlp_model(model_dir: Path) -> Path:
    return models.numpy_mlp_onnx(model_dir / "mlp.onnx")


@pytest.fixture(scope="session")
def conv_model(model_dir: Path) -> Path:
    return models.conv_onnx(model_dir / "conv.onnx")


@pytest.fixture(scope="session")
def mlp_data(model_dir: Path) -> tuple[Path, Path]:
    directory = model_dir / "mlp-data"
    directory.mkdir()
    return models.save_data(directory, calibration_rows=200)


@pytest.fixture(scope="session")
def image_data(model_dir: Path) -> tuple[Path, Path]:
    directory = model_dir / "image-data"
    directory.mkdir()
    return models.save_data(directory, calibration_rows=200, shape=(1, 8, 8), name="image")
