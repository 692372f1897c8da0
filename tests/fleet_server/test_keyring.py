"""The keyring: key files, the signed root.json, and the checks when loading it back."""

import stat
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.protocol.canonical import canonical_bytes, parse_json
from agent.protocol.envelope import Envelope, check_signatures
from agent.protocol.errors import BadSignatureError, ExpiredError
from agent.protocol.keys import key_id
from agent.protocol.metadata import Role
from agent.protocol.verify import load_trusted_root
from fleet_server import keyring as keyring_module
from fleet_server.errors import KeyringError, KeyringExistsError
from fleet_server.keyring import init_keyring, load_keyring

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_init_writes_owner_only_keys_and_a_root_that_verifies(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    keyring = init_keyring(directory, root_keys=3, threshold=2, expires_days=30, now=NOW)

    names = sorted(path.name for path in directory.iterdir())
    assert names == ["release.pem", "rollout.pem", "root-1.pem", "root-2.pem", "root-3.pem", "root.json"]
    for name in names[:-1]:
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700

    data = (directory / "root.json").read_bytes()
    document = parse_json(data)
    assert data == canonical_bytes(document)
    root = load_trusted_root(document, NOW)
    assert root == keyring.root
    assert root.version == 1
    assert root.expires == NOW + timedelta(days=30)
    assert root.roles[Role.ROOT].threshold == 2
    assert set(root.roles[Role.ROOT].keyids) == {key_id(key) for key in keyring.root_keys}
    assert root.roles[Role.RELEASE].keyids == (key_id(keyring.release_key),)
    assert root.roles[Role.ROLLOUT].keyids == (key_id(keyring.rollout_key),)
    assert len(Envelope.from_dict(document).signatures) == 3


def test_init_into_an_existing_empty_directory(tmp_path: Path) -> None:
    keyring = init_keyring(tmp_path)
    assert (tmp_path / "root.json").exists()
    assert keyring.root.roles[Role.ROOT].threshold == 1


def test_init_refuses_a_directory_that_holds_files(tmp_path: Path) -> None:
    init_keyring(tmp_path / "keys")
    before = {path.name: path.read_bytes() for path in (tmp_path / "keys").iterdir()}
    with pytest.raises(KeyringExistsError, match="already holds files"):
        init_keyring(tmp_path / "keys")
    assert {path.name: path.read_bytes() for path in (tmp_path / "keys").iterdir()} == before


def test_init_reports_a_path_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(KeyringError, match="cannot create .*: Not a directory"):
        init_keyring(blocker / "keys")
    with pytest.raises(KeyringError, match="is not a directory"):
        init_keyring(blocker)


def test_init_removes_what_it_wrote_when_a_write_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = keyring_module.write_private_key
    calls = []

    def write_then_fail(path: Path, pem: bytes) -> None:
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_write(path, pem)

    monkeypatch.setattr(keyring_module, "write_private_key", write_then_fail)
    with pytest.raises(KeyringError, match="No space left on device"):
        init_keyring(tmp_path / "keys")
    assert list((tmp_path / "keys").iterdir()) == []


@pytest.mark.parametrize(("root_keys", "threshold", "expires_days"), [(0, 1, 1), (2, 3, 1), (2, 0, 1), (1, 1, 0)])
def test_init_rejects_impossible_arguments(tmp_path: Path, root_keys: int, threshold: int, expires_days: int) -> None:
    with pytest.raises(KeyringError) as caught:
        init_keyring(tmp_path / "keys", root_keys=root_keys, threshold=threshold, expires_days=expires_days)
    assert "--threshold" in caught.value.hint
    assert not (tmp_path / "keys").exists()


def test_load_round_trips(tmp_path: Path) -> None:
    created = init_keyring(tmp_path, root_keys=2, threshold=2, now=NOW)
    loaded = load_keyring(tmp_path, now=NOW)
    assert loaded.root == created.root
    assert loaded.root_envelope == created.root_envelope
    assert key_id(loaded.rollout_key) == key_id(created.rollout_key)
    assert loaded.release_key is not None and key_id(loaded.release_key) == key_id(created.release_key)
    assert [key_id(key) for key in loaded.root_keys] == [key_id(key) for key in created.root_keys]
    assert loaded.root_path == tmp_path / "root.json"


def test_release_and_root_keys_may_be_kept_offline(tmp_path: Path) -> None:
    init_keyring(tmp_path, now=NOW)
    (tmp_path / "release.pem").unlink()
    (tmp_path / "root-1.pem").unlink()
    keyring = load_keyring(tmp_path, now=NOW)
    assert keyring.release_key is None and keyring.root_keys == ()
    with pytest.raises(KeyringError, match="release private key"):
        keyring.sign(Role.RELEASE, {"_type": "release"})
    check_signatures(keyring.sign(Role.ROLLOUT, {"_type": "directive"}), keyring.root, Role.ROLLOUT)


def test_load_rejects_a_key_of_the_wrong_role(tmp_path: Path) -> None:
    init_keyring(tmp_path, now=NOW)
    (tmp_path / "release.pem").write_bytes((tmp_path / "rollout.pem").read_bytes())
    with pytest.raises(KeyringError, match="release.pem is not a release key"):
        load_keyring(tmp_path, now=NOW)


def test_load_rejects_a_key_from_another_keyring(tmp_path: Path) -> None:
    init_keyring(tmp_path / "a", now=NOW)
    init_keyring(tmp_path / "b", now=NOW)
    (tmp_path / "a" / "rollout.pem").write_bytes((tmp_path / "b" / "rollout.pem").read_bytes())
    with pytest.raises(KeyringError, match="rollout.pem is not a rollout key"):
        load_keyring(tmp_path / "a", now=NOW)


def test_load_rejects_a_tampered_root(tmp_path: Path) -> None:
    init_keyring(tmp_path, now=NOW)
    document = parse_json((tmp_path / "root.json").read_bytes())
    document["signed"]["version"] = 2
    (tmp_path / "root.json").write_bytes(canonical_bytes(document))
    with pytest.raises(KeyringError, match="does not verify") as caught:
        load_keyring(tmp_path, now=NOW)
    assert isinstance(caught.value.__cause__, BadSignatureError)


def test_load_rejects_an_expired_root(tmp_path: Path) -> None:
    init_keyring(tmp_path, expires_days=1, now=NOW)
    with pytest.raises(KeyringError) as caught:
        load_keyring(tmp_path, now=NOW + timedelta(days=2))
    assert isinstance(caught.value.__cause__, ExpiredError)


@pytest.mark.parametrize(("damage", "message"), [
    (lambda d: (d / "root.json").unlink(), "root.json is missing"),
    (lambda d: (d / "root.json").write_bytes(b"{not json"), "does not verify: invalid JSON"),
    (lambda d: (d / "rollout.pem").unlink(), "rollout.pem is missing"),
    (lambda d: (d / "rollout.pem").write_bytes(b"garbage"), "rollout.pem: not an unencrypted PEM"),
])
def test_load_reports_missing_or_corrupt_files(tmp_path: Path, damage: Callable[[Path], object], message: str) -> None:
    init_keyring(tmp_path, now=NOW)
    damage(tmp_path)
    with pytest.raises(KeyringError, match=message):
        load_keyring(tmp_path, now=NOW)
