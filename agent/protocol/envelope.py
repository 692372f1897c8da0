"""Signed envelopes: ``{"signed": {...}, "signatures": [{"keyid", "sig"}]}``.

The signature covers the canonical bytes of ``signed``. ``check_signatures``
is the one place that decides whether enough trusted keys of a role signed.
"""

from dataclasses import dataclass
from typing import Any

from agent.protocol import fields as f
from agent.protocol.canonical import canonical_bytes, canonical_sha256
from agent.protocol.errors import (
    BadSignatureError,
    MalformedDocumentError,
    ThresholdNotMetError,
    UnknownSignerError,
    WrongRoleError,
)
from agent.protocol.keys import Ed25519PrivateKey, key_id, load_public_key_hex, sign_bytes, signature_valid
from agent.protocol.metadata import Role, Root

MAX_SIGNATURES = 64


@dataclass(frozen=True)
class Envelope:
    signed: dict[str, Any]
    signatures: tuple[tuple[str, str], ...]  # (key id, signature hex)

    def to_dict(self) -> dict[str, Any]:
        return {
            "signed": self.signed,
            "signatures": [{"keyid": keyid, "sig": sig} for keyid, sig in self.signatures],
        }

    def sha256(self) -> str:
        """Hash of the canonical envelope bytes: what a directive references."""
        return canonical_sha256(self.to_dict())

    @classmethod
    def from_dict(cls, obj: Any, what: str = "envelope") -> "Envelope":
        obj = f.mapping(obj, what)
        f.only_keys(obj, {"signed", "signatures"}, what)
        signed = f.mapping(f.get(obj, "signed", what), f"{what}.signed")
        signatures = []
        for entry in f.object_list(obj, "signatures", what, MAX_SIGNATURES):
            f.only_keys(entry, {"keyid", "sig"}, f"{what}.signatures[]")
            signatures.append((f.sha256_hex(entry, "keyid", f"{what}.signatures[]"),
                               f.string(entry, "sig", f"{what}.signatures[]", max_len=256)))
        return cls(signed, tuple(signatures))


def sign_envelope(signed: dict[str, Any], keys: list[Ed25519PrivateKey]) -> Envelope:
    payload = canonical_bytes(signed)
    return Envelope(signed, tuple((key_id(key), sign_bytes(key, payload)) for key in keys))


def check_signatures(envelope: Envelope, root: Root, role: Role) -> None:
    """Raise unless a threshold of distinct ``role`` keys of ``root`` signed ``envelope``."""
    spec = root.roles[role]
    payload = canonical_bytes(envelope.signed)
    role_keys = set(spec.keyids)
    valid: set[str] = set()
    seen_role_key = False
    seen_known_key = False
    for keyid, signature in envelope.signatures:
        if keyid not in root.keys:
            continue
        seen_known_key = True
        if keyid not in role_keys:
            continue
        seen_role_key = True
        if not signature_valid(load_public_key_hex(root.keys[keyid]), signature, payload):
            raise BadSignatureError(f"{role} signature by {keyid[:12]} does not match the document")
        valid.add(keyid)
    if not seen_known_key:
        raise UnknownSignerError(f"{role} document is not signed by any key the root knows")
    if not seen_role_key:
        raise WrongRoleError(f"{role} document is signed only by keys of other roles")
    if len(valid) < spec.threshold:
        raise ThresholdNotMetError(f"{role} needs {spec.threshold} distinct signatures, has {len(valid)}")


def require_type(envelope: Envelope, expected: str) -> None:
    if envelope.signed.get("_type") != expected:
        raise MalformedDocumentError(f"expected a {expected} document, got {envelope.signed.get('_type')!r}")
