"""Shared by the firmware tests: one wheel of this repository per session, and its dependencies."""

from pathlib import Path

import pytest

from tests.firmware_images.builds import build_wheel, wheelhouse


@pytest.fixture(scope="session")
def agent_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="session")
def agent_wheelhouse(agent_wheel: Path) -> Path:
    return wheelhouse(agent_wheel)
