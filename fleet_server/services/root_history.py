"""The history of trusted roots: every root version the server has used, so
devices holding an older one can walk the chain (``GET /api/v1/root/{n}``)
and accept each successor per the protocol (a threshold of the old and of the
new root keys signed it). Recorded at start and when the keys are reloaded;
each newly seen version is in the audit trail.
"""

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from agent.protocol.canonical import canonical_bytes, canonical_sha256, parse_json
from agent.protocol.envelope import Envelope
from agent.protocol.errors import ProtocolError
from agent.protocol.metadata import Root
from agent.protocol.verify import load_trusted_root, verify_root_update
from fleet_server.core.db import begin_write
from fleet_server.errors import RootNotFoundError, RootRotationFailedError
from fleet_server.keyring import Keyring
from fleet_server.models.pki import TrustedRoot
from fleet_server.services.audit import SYSTEM_ACTOR, record_audit

logger = logging.getLogger(__name__)

HISTORY_DIR = "roots"  # <key dir>/roots/<version>.root.json: the roots a rotation replaced
MAX_ROOT_BYTES = 256 * 1024


def history_path(key_dir: Path, version: int) -> Path:
    return Path(key_dir) / HISTORY_DIR / f"{version}.root.json"


def _version(envelope: dict[str, Any]) -> int:
    version = envelope.get("signed", {}).get("version") if isinstance(envelope, dict) else None
    if not isinstance(version, int) or isinstance(version, bool):
        raise RootRotationFailedError("a root document has no integer version")
    return version


def keyring_roots(keyring: Keyring) -> list[dict[str, Any]]:
    """The roots of the key directory: archived ones (``roots/``) and the current ``root.json``, by version."""
    found: dict[int, dict[str, Any]] = {}
    for path in sorted((keyring.directory / HISTORY_DIR).glob("*.root.json")):
        try:
            envelope = parse_json(path.read_bytes(), MAX_ROOT_BYTES)
        except (OSError, ProtocolError) as exc:
            raise RootRotationFailedError(f"cannot read the archived root {path}: {exc}") from None
        found[_version(envelope)] = envelope
    found[keyring.root.version] = keyring.root_envelope
    return [found[version] for version in sorted(found) if version <= keyring.root.version]


def latest(session: Session) -> TrustedRoot | None:
    return session.exec(select(TrustedRoot).order_by(col(TrustedRoot.version).desc()).limit(1)).first()


def record(session: Session, envelopes: list[dict[str, Any]], actor: str = SYSTEM_ACTOR,
           now: datetime | None = None) -> list[int]:
    """Store the roots not seen yet, each checked as the successor of the one before; return new versions."""
    now = now or datetime.now(UTC)
    begin_write(session)
    newest = latest(session)
    added = []
    for envelope in envelopes:
        version = _version(envelope)
        if newest is not None and version <= newest.version:
            if version == newest.version and canonical_sha256(envelope) != newest.sha256:
                raise RootRotationFailedError(f"root version {version} in the key directory differs from the one "
                                              "already recorded: roots are never rewritten, rotate to a new version")
            continue
        try:
            if newest is None:
                load_trusted_root(envelope, now)
            else:
                trusted = Root.from_dict(Envelope.from_dict(parse_json(newest.envelope, MAX_ROOT_BYTES)).signed)
                verify_root_update(trusted, envelope, now)
        except ProtocolError as exc:
            raise RootRotationFailedError(f"root version {version} is not a valid successor of the recorded "
                                          f"root: {type(exc).__name__}: {exc}") from None
        row = TrustedRoot(version=version, sha256=canonical_sha256(envelope),
                          envelope=canonical_bytes(envelope).decode("utf-8"))
        session.add(row)
        session.flush()
        record_audit(session, actor, "root.rotated" if newest is not None else "root.recorded",
                     {"version": version, "sha256": row.sha256,
                      "previous_version": newest.version if newest is not None else None})
        newest = row
        added.append(version)
    session.commit()
    if added:
        logger.info("server event=roots_recorded versions=%s", ",".join(map(str, added)))
    return added


def get(session: Session, version: int) -> dict[str, Any]:
    row = session.get(TrustedRoot, version)
    if row is None:
        raise RootNotFoundError(f"no root version {version}")
    return parse_json(row.envelope, MAX_ROOT_BYTES)
