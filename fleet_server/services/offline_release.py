"""Releases signed away from the server: the request file the server produces
for a model version, signing it with the release key on the operator's
machine (``sign_request``, used by ``edgefleet release sign``), and accepting
the signed envelope back. The server never sees the release key: it checks
the signatures against the trusted root's release role (threshold included)
exactly as a device will, and that every variant is an artifact it holds.
"""

import logging
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session, select

from agent.protocol.envelope import Envelope, check_signatures, sign_envelope
from agent.protocol.errors import ProtocolError
from agent.protocol.keys import Ed25519PrivateKey, key_id
from agent.protocol.metadata import Release, Role, Root
from agent.protocol.verify import verify_release
from fleet_server.core.db import begin_write
from fleet_server.errors import ReleaseExistsError, SignedReleaseError
from fleet_server.keyring import Keyring
from fleet_server.models.release import ReleaseRecord
from fleet_server.services import registry, releases
from fleet_server.services.artifact_store import ArtifactStore

logger = logging.getLogger(__name__)

REQUEST_TYPE = "release-request"


def _not_released(session: Session, model_version_id: int | None, name: str, version: int) -> None:
    existing = session.exec(select(ReleaseRecord).where(ReleaseRecord.model_version_id == model_version_id)).first()
    if existing is not None:
        raise ReleaseExistsError(f"{name} v{version} is already released (sha256 {existing.sha256})")


def release_request(session: Session, keyring: Keyring, name: str, version: int, ttl_days: int) -> dict[str, Any]:
    """What an operator signs offline: the release document plus the root's release role, for reference."""
    row = registry.get_version(session, name, version)
    _not_released(session, row.id, name, version)
    release = releases.build_release(name, row, ttl_days)
    spec = keyring.root.roles[Role.RELEASE]
    return {"_type": REQUEST_TYPE, "root_version": keyring.root.version, "release_keyids": list(spec.keyids),
            "threshold": spec.threshold, "release": release.to_dict()}


def sign_request(document: Any, keys: list[Ed25519PrivateKey], root: Root | None = None) -> dict[str, Any]:
    """Sign a release request (or add signatures to an already signed envelope); pure, no server needed.

    With ``root``, every key must be one of its release keys and the result must meet the threshold.
    """
    if not isinstance(document, dict):
        raise SignedReleaseError("the request file is not a JSON object")
    signatures: tuple[tuple[str, str], ...] = ()  # (key id, signature hex), as in Envelope
    if document.get("_type") == REQUEST_TYPE:
        signed = document.get("release")
    else:
        try:
            envelope = Envelope.from_dict(document, "release")
        except ProtocolError as exc:
            raise SignedReleaseError(f"neither a release request nor a signed release: {exc}") from None
        signed, signatures = envelope.signed, envelope.signatures
    try:
        Release.from_dict(signed)
    except ProtocolError as exc:
        raise SignedReleaseError(f"the release in the request is malformed: {exc}") from None
    assert isinstance(signed, dict)
    if root is not None:
        allowed = set(root.roles[Role.RELEASE].keyids)
        for key in keys:
            if key_id(key) not in allowed:
                raise SignedReleaseError(f"key {key_id(key)[:16]} is not a release key of root v{root.version}")
    already = {keyid for keyid, _ in signatures}
    added = sign_envelope(signed, [key for key in keys if key_id(key) not in already])
    envelope = Envelope(signed, (*signatures, *added.signatures))
    if root is not None:
        try:
            check_signatures(envelope, root, Role.RELEASE)
        except ProtocolError as exc:
            raise SignedReleaseError(f"not enough release signatures yet: {exc}",
                                     hint="sign the same file again with another release key") from None
    return envelope.to_dict()


def accept_signed(session: Session, keyring: Keyring, artifacts: ArtifactStore, document: Any, actor: str,
                  now: datetime | None = None) -> ReleaseRecord:
    """Verify an envelope signed elsewhere against the root's release role and store it as the release."""
    begin_write(session)
    try:
        release, _sha256 = verify_release(keyring.root, document, now or datetime.now(UTC))
        envelope = Envelope.from_dict(document, "release")
    except ProtocolError as exc:
        raise SignedReleaseError(f"the signed release does not verify: {type(exc).__name__}: {exc}") from None
    row = registry.get_version(session, release.name, release.version)
    _not_released(session, row.id, release.name, release.version)
    for variant in release.variants:
        path = artifacts.find(variant.sha256)
        if path is None or path.stat().st_size != variant.length:
            raise SignedReleaseError(f"variant {variant.name}: the server holds no artifact with sha256 "
                                     f"{variant.sha256[:16]}... of {variant.length} bytes")
    record = releases.store_release(session, row, release, envelope, actor, signed_by="offline")
    logger.info("server event=release_accepted name=%s version=%d signatures=%d", release.name, release.version,
                len(envelope.signatures))
    return record
