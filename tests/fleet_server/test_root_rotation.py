"""``keys rotate-root``: root N+1 verifies as a successor (threshold of old and new
root keys), dropped keys are gone from it, the server records the chain and
serves it, and a rotation without enough root keys is refused."""

from pathlib import Path

import pytest

from agent.protocol.keys import key_id
from agent.protocol.metadata import Role
from agent.protocol.verify import verify_root_update
from fleet_server.errors import RootRotationFailedError
from fleet_server.keyring import init_keyring, load_keyring
from fleet_server.root_rotation import RotationPlan, rotate_root
from fleet_server.services.root_history import history_path
from tests.agent.signing import now
from tests.fleet_server.conftest import Api


@pytest.fixture(scope="module")
def database_backend() -> str:
    """Roles and key files do not depend on the database: SQLite only (the other API tests run on both)."""
    return "sqlite"


def test_rotating_the_rollout_key_drops_the_old_one(tmp_path: Path) -> None:
    old = init_keyring(tmp_path / "keys", root_keys=3, threshold=2)
    result = rotate_root(tmp_path / "keys", RotationPlan(rotate_rollout=True))
    new = result.keyring
    assert new.root.version == 2 and result.previous_version == 1
    assert key_id(old.rollout_key) not in new.root.keys and key_id(old.rollout_key) in result.removed_keyids
    assert new.root.roles[Role.RELEASE] == old.root.roles[Role.RELEASE]
    assert verify_root_update(old.root, new.root_envelope, now()) == new.root
    assert history_path(tmp_path / "keys", 1).exists()


def test_replacing_the_root_keys_needs_old_and_new_signatures(tmp_path: Path) -> None:
    old = init_keyring(tmp_path / "keys", root_keys=2, threshold=2)
    new = rotate_root(tmp_path / "keys", RotationPlan(root_keys=3, threshold=2, rotate_release=True)).keyring
    assert set(new.root.roles[Role.ROOT].keyids).isdisjoint(old.root.roles[Role.ROOT].keyids)
    assert len(new.root_keys) == 3 and new.release_key is not None
    assert verify_root_update(old.root, new.root_envelope, now()).version == 2
    third = rotate_root(tmp_path / "keys", RotationPlan(rotate_rollout=True)).keyring  # the new root keys sign v3
    assert verify_root_update(new.root, third.root_envelope, now()).version == 3


def test_without_enough_root_keys_nothing_changes(tmp_path: Path) -> None:
    init_keyring(tmp_path / "keys", root_keys=2, threshold=2)
    (tmp_path / "keys" / "root-2.pem").unlink()
    before = (tmp_path / "keys" / "root.json").read_bytes()
    with pytest.raises(RootRotationFailedError, match="needs 2 root key"):
        rotate_root(tmp_path / "keys", RotationPlan(rotate_rollout=True))
    assert (tmp_path / "keys" / "root.json").read_bytes() == before


def test_the_server_records_the_new_root_on_reload_and_serves_the_chain(api_factory) -> None:
    api: Api = api_factory()
    key_dir = api.runtime.settings.resolved_key_dir
    assert api.get("/root/1", headers={}).json() == api.runtime.keyring.root_envelope
    assert api.get("/root/2", headers={}).status_code == 404
    rotate_root(key_dir, RotationPlan(rotate_rollout=True))
    reloaded = api.post("/keys/reload")
    assert reloaded.json() == {"root_version": 2, "new_root_versions": [2]}
    assert api.get("/root/2", headers={}).json() == load_keyring(key_dir).root_envelope
    assert api.get("/root", headers={}).json()["signed"]["version"] == 2
    assert api.post("/keys/reload").json()["new_root_versions"] == []
    rotations = api.get("/audit", params={"action": "root.rotated"}).json()
    assert [entry["details"]["version"] for entry in rotations] == [2]
