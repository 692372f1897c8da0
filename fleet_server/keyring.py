"""The operator's keyring: root, release and rollout keys plus the signed ``root.json``.

A keyring directory holds ``root-1.pem`` .. ``root-N.pem``, ``release.pem``, ``rollout.pem``
(private keys, mode 0600) and ``root.json``, the signed root metadata that devices trust. The
root and release keys may be moved offline; the server only needs ``rollout.pem`` and
``root.json`` (plus ``release.pem`` when it signs releases itself).
"""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.protocol.canonical import canonical_bytes, parse_json
from agent.protocol.envelope import Envelope, sign_envelope
from agent.protocol.errors import ProtocolError
from agent.protocol.keys import (
    Ed25519PrivateKey,
    generate_private_key,
    key_id,
    load_private_key_pem,
    private_key_to_pem,
    public_key_hex,
)
from agent.protocol.metadata import Role, RoleSpec, Root
from agent.protocol.verify import load_trusted_root
from agent.storage import atomic_write_bytes, write_private_key
from fleet_server.errors import KeyringError, KeyringExistsError

log = logging.getLogger(__name__)

ROOT_FILE = "root.json"
RELEASE_KEY_FILE = "release.pem"
ROLLOUT_KEY_FILE = "rollout.pem"
MAX_ROOT_KEYS = 64


def root_key_file(number: int) -> str:
    return f"root-{number}.pem"


@dataclass(frozen=True)
class Keyring:
    directory: Path
    root_envelope: dict[str, Any]  # the signed root.json, as devices receive it
    root: Root
    release_key: Ed25519PrivateKey | None  # None when kept offline
    rollout_key: Ed25519PrivateKey
    root_keys: tuple[Ed25519PrivateKey, ...] = ()  # the root keys present here (may be none)

    @property
    def root_path(self) -> Path:
        return self.directory / ROOT_FILE

    def key_for(self, role: Role) -> Ed25519PrivateKey:
        """The private key that signs for ``role`` (release or rollout)."""
        if role is Role.RELEASE and self.release_key is not None:
            return self.release_key
        if role is Role.ROLLOUT:
            return self.rollout_key
        raise KeyringError(f"the {role} private key is not in {self.directory}")

    def sign(self, role: Role, signed: dict[str, Any]) -> Envelope:
        """Sign ``signed`` (a release or directive document) with the key of ``role``."""
        return sign_envelope(signed, [self.key_for(role)])


def _check_init_arguments(root_keys: int, threshold: int, expires_days: int) -> None:
    hint = f"use --root-keys N (1 to {MAX_ROOT_KEYS}), --threshold K (1 to N) and --expires-days D (1 or more)"
    if not 1 <= root_keys <= MAX_ROOT_KEYS:
        raise KeyringError(f"the number of root keys must be between 1 and {MAX_ROOT_KEYS}, not {root_keys}", hint)
    if not 1 <= threshold <= root_keys:
        raise KeyringError(f"the root threshold must be between 1 and the number of root keys ({root_keys}), "
                           f"not {threshold}", hint)
    if expires_days < 1:
        raise KeyringError(f"the root must expire at least 1 day from now, not {expires_days}", hint)


def _prepare_directory(directory: Path) -> None:
    if directory.exists():
        if not directory.is_dir():
            raise KeyringError(f"{directory} exists and is not a directory")
        if any(directory.iterdir()):
            raise KeyringExistsError(f"{directory} already holds files; refusing to overwrite keys")
        return
    try:
        directory.mkdir(parents=True, mode=0o700)
    except OSError as exc:
        raise KeyringError(f"cannot create {directory}: {exc.strerror or exc}") from exc


def init_keyring(directory: Path, root_keys: int = 1, threshold: int = 1, expires_days: int = 365,
                 now: datetime | None = None) -> Keyring:
    """Generate a fresh key set in ``directory`` (absent or empty) and sign root version 1."""
    directory = Path(directory)
    _check_init_arguments(root_keys, threshold, expires_days)
    _prepare_directory(directory)
    now = (now or datetime.now(UTC)).replace(microsecond=0)

    root_private = [generate_private_key() for _ in range(root_keys)]
    release_key = generate_private_key()
    rollout_key = generate_private_key()
    everyone = [*root_private, release_key, rollout_key]
    root = Root(
        version=1,
        expires=now + timedelta(days=expires_days),
        keys={key_id(key): public_key_hex(key) for key in everyone},
        roles={
            Role.ROOT: RoleSpec(tuple(key_id(key) for key in root_private), threshold),
            Role.RELEASE: RoleSpec((key_id(release_key),), 1),
            Role.ROLLOUT: RoleSpec((key_id(rollout_key),), 1),
        },
    )
    envelope = sign_envelope(root.to_dict(), root_private).to_dict()

    files: dict[str, bytes] = {root_key_file(n): private_key_to_pem(key) for n, key in enumerate(root_private, 1)}
    files[RELEASE_KEY_FILE] = private_key_to_pem(release_key)
    files[ROLLOUT_KEY_FILE] = private_key_to_pem(rollout_key)
    written: list[Path] = []
    try:
        for name, pem in files.items():
            write_private_key(directory / name, pem)
            written.append(directory / name)
        atomic_write_bytes(directory / ROOT_FILE, canonical_bytes(envelope))
    except OSError as exc:
        for path in written:
            path.unlink(missing_ok=True)
        raise KeyringError(f"cannot write keys to {directory}: {exc.strerror or exc}") from exc
    log.debug("created keyring in %s: %d root key(s), threshold %d", directory, root_keys, threshold)
    return Keyring(directory, envelope, root, release_key, rollout_key, tuple(root_private))


def _read_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        if path.stat().st_mode & 0o077:
            log.warning("%s is readable by other users; restrict it with 'chmod 600 %s'", path, path)
        return load_private_key_pem(path.read_bytes())
    except OSError as exc:
        raise KeyringError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except ProtocolError as exc:
        raise KeyringError(f"{path}: {exc}") from exc


def _require_role_key(key: Ed25519PrivateKey, root: Root, role: Role, path: Path) -> None:
    if key_id(key) not in root.roles[role].keyids:
        raise KeyringError(f"{path} is not a {role} key of {path.parent / ROOT_FILE} (key id {key_id(key)[:16]})")


def _root_key_paths(directory: Path) -> list[Path]:
    paths = [path for path in directory.glob("root-*.pem") if path.stem.removeprefix("root-").isdigit()]
    return sorted(paths, key=lambda path: int(path.stem.removeprefix("root-")))


def load_keyring(directory: Path, now: datetime | None = None) -> Keyring:
    """Read and check a keyring: root.json must verify and each private key must match its role."""
    directory = Path(directory)
    root_path = directory / ROOT_FILE
    try:
        data = root_path.read_bytes()
    except FileNotFoundError:
        raise KeyringError(f"{directory} is not a keyring: {ROOT_FILE} is missing") from None
    except OSError as exc:
        raise KeyringError(f"cannot read {root_path}: {exc.strerror or exc}") from exc
    try:
        envelope = parse_json(data)
        root = load_trusted_root(envelope, now or datetime.now(UTC))
    except ProtocolError as exc:
        raise KeyringError(f"{root_path} does not verify: {exc}") from exc

    rollout_path = directory / ROLLOUT_KEY_FILE
    if not rollout_path.exists():
        raise KeyringError(f"{rollout_path} is missing: the server needs the rollout key")
    rollout_key = _read_private_key(rollout_path)
    _require_role_key(rollout_key, root, Role.ROLLOUT, rollout_path)

    release_key = None
    release_path = directory / RELEASE_KEY_FILE
    if release_path.exists():
        release_key = _read_private_key(release_path)
        _require_role_key(release_key, root, Role.RELEASE, release_path)

    root_keys = []
    for path in _root_key_paths(directory):
        key = _read_private_key(path)
        _require_role_key(key, root, Role.ROOT, path)
        root_keys.append(key)
    return Keyring(directory, envelope, root, release_key, rollout_key, tuple(root_keys))
