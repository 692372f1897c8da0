"""Fixtures for the protocol tests (builders live in ``factories``)."""

import pytest

from tests.agent.protocol.factories import Scenario, scenario


@pytest.fixture
def scene() -> Scenario:
    """A trusted root plus a valid, signed directive and release for the test device."""
    return scenario()
