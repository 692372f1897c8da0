"""One TLS fleet (Mosquitto from ``edgefleet broker-config`` + the server on mqtts://)
shared by the security tests of this package; each test enrolls its own devices."""

from collections.abc import Iterator

import pytest

from tests.integration.security.secure_fleet import SecureFleet, start_secure_fleet


@pytest.fixture(scope="package")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureFleet]:
    fleet = start_secure_fleet(tmp_path_factory.mktemp("secure-fleet"))
    yield fleet
    fleet.stop()
