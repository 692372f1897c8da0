"""Root rotation: root version N+1, signed by a threshold of root N's keys and
by a threshold of its own (``agent.protocol.verify.verify_root_update``).

A rotation can replace the rollout key, the release key and/or the root keys.
It runs where the root keys are (they must be in the key directory), archives
root N as ``roots/<N>.root.json`` (the server serves the chain to devices),
and writes the new private keys before the new ``root.json`` replaces the old
one, so a crash leaves either the old key set working or the new one with
spare files. The server picks the new keys up on ``POST /api/v1/keys/reload``
or at its next start; devices fetch ``/api/v1/root/<N+1>`` before verifying a
directive and, once they trust N+1, reject signatures by the keys it dropped.
"""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.protocol.canonical import canonical_bytes
from agent.protocol.envelope import sign_envelope
from agent.protocol.errors import ProtocolError
from agent.protocol.keys import Ed25519PrivateKey, generate_private_key, key_id, private_key_to_pem, public_key_hex
from agent.protocol.metadata import Role, RoleSpec, Root
from agent.protocol.verify import verify_root_update
from agent.storage import atomic_write_bytes, write_private_key
from fleet_server.errors import RootRotationFailedError
from fleet_server.keyring import (
    MAX_ROOT_KEYS,
    RELEASE_KEY_FILE,
    ROLLOUT_KEY_FILE,
    ROOT_FILE,
    Keyring,
    load_keyring,
    root_key_file,
)
from fleet_server.services.root_history import HISTORY_DIR, history_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RotationPlan:
    rotate_rollout: bool = False
    rotate_release: bool = False
    root_keys: int | None = None  # replace the root keys with this many fresh ones
    threshold: int | None = None  # root threshold of the new root (default: keep, capped by the key count)
    expires_days: int = 365


@dataclass(frozen=True)
class RotationResult:
    keyring: Keyring
    previous_version: int
    removed_keyids: tuple[str, ...]


def _signing_root_keys(keyring: Keyring) -> list[Ed25519PrivateKey]:
    spec = keyring.root.roles[Role.ROOT]
    present = [key for key in keyring.root_keys if key_id(key) in spec.keyids]
    if len(present) < spec.threshold:
        raise RootRotationFailedError(
            f"root v{keyring.root.version} needs {spec.threshold} root key(s) to sign its successor; "
            f"{keyring.directory} holds {len(present)}",
            hint="run the rotation where the root keys are kept (root-N.pem files in the key directory)")
    return present


def _check_plan(plan: RotationPlan, keyring: Keyring) -> None:
    if plan.root_keys is not None and not 1 <= plan.root_keys <= MAX_ROOT_KEYS:
        raise RootRotationFailedError(f"--root-keys must be between 1 and {MAX_ROOT_KEYS}")
    if plan.expires_days < 1:
        raise RootRotationFailedError("--expires-days must be at least 1")
    if not (plan.rotate_rollout or plan.rotate_release or plan.root_keys is not None or plan.threshold is not None):
        log.info("rotation changes no key: root v%d is re-signed with a new expiry", keyring.root.version)


def rotate_root(directory: Path, plan: RotationPlan, now: datetime | None = None) -> RotationResult:
    """Sign root N+1 for the keyring in ``directory`` and install it there (with the new keys)."""
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    old = load_keyring(directory, now)
    _check_plan(plan, old)
    signers_old = _signing_root_keys(old)
    root = old.root

    new_root_keys = ([generate_private_key() for _ in range(plan.root_keys)] if plan.root_keys is not None
                     else signers_old)
    threshold = plan.threshold or min(root.roles[Role.ROOT].threshold, len(new_root_keys))
    if not 1 <= threshold <= len(new_root_keys):
        raise RootRotationFailedError(f"the root threshold must be between 1 and {len(new_root_keys)}")
    release_key = generate_private_key() if plan.rotate_release else None
    rollout_key = generate_private_key() if plan.rotate_rollout else None
    release_ids = (key_id(release_key),) if release_key else root.roles[Role.RELEASE].keyids
    rollout_ids = (key_id(rollout_key),) if rollout_key else root.roles[Role.ROLLOUT].keyids
    public = {key_id(key): public_key_hex(key) for key in new_root_keys}
    for new_key in (release_key, rollout_key):
        if new_key is not None:
            public[key_id(new_key)] = public_key_hex(new_key)
    for keyid in (*release_ids, *rollout_ids):
        if keyid not in public:
            public[keyid] = root.keys[keyid]
    candidate = Root(
        version=root.version + 1,
        expires=now + timedelta(days=plan.expires_days),
        keys=public,
        roles={
            Role.ROOT: RoleSpec(tuple(key_id(key) for key in new_root_keys), threshold),
            Role.RELEASE: RoleSpec(tuple(release_ids), root.roles[Role.RELEASE].threshold
                                   if release_key is None else 1),
            Role.ROLLOUT: RoleSpec(tuple(rollout_ids), root.roles[Role.ROLLOUT].threshold
                                   if rollout_key is None else 1),
        },
    )
    signers = {key_id(key): key for key in [*signers_old, *new_root_keys]}
    envelope = sign_envelope(candidate.to_dict(), list(signers.values())).to_dict()
    try:
        verify_root_update(root, envelope, now)  # exactly what a device will check
    except ProtocolError as exc:
        raise RootRotationFailedError(f"the new root does not verify as a successor: {exc}") from None

    _install(old, envelope, new_root_keys if plan.root_keys is not None else None, release_key, rollout_key)
    removed = tuple(sorted(set(root.keys) - set(candidate.keys)))
    log.info("event=root_rotated version=%d removed_keys=%d", candidate.version, len(removed))
    return RotationResult(load_keyring(directory, now), root.version, removed)


def _install(old: Keyring, envelope: dict, root_keys: list[Ed25519PrivateKey] | None,
             release_key: Ed25519PrivateKey | None, rollout_key: Ed25519PrivateKey | None) -> None:
    directory = old.directory
    (directory / HISTORY_DIR).mkdir(mode=0o700, exist_ok=True)
    atomic_write_bytes(history_path(directory, old.root.version), canonical_bytes(old.root_envelope))
    staged: list[tuple[Path, Path]] = []
    files: list[tuple[str, Ed25519PrivateKey]] = []
    if root_keys is not None:
        files += [(root_key_file(number), key) for number, key in enumerate(root_keys, 1)]
    if release_key is not None:
        files.append((RELEASE_KEY_FILE, release_key))
    if rollout_key is not None:
        files.append((ROLLOUT_KEY_FILE, rollout_key))
    for name, key in files:
        temporary = directory / f"{name}.new"
        write_private_key(temporary, private_key_to_pem(key))
        staged.append((temporary, directory / name))
    atomic_write_bytes(directory / ROOT_FILE, canonical_bytes(envelope))  # the commit point
    if root_keys is not None:
        for path in directory.glob("root-*.pem"):
            retired = directory / HISTORY_DIR / f"v{old.root.version}-{path.name}"
            path.replace(retired)  # retired root keys stay (0600) next to the root they signed
    for temporary, final in staged:
        temporary.replace(final)
