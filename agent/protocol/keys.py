"""Ed25519 keys: generation, PEM (de)serialisation, key ids, raw signatures.

Pure: bytes in, bytes out. Writing a private key to disk (mode 0600) is done
by ``agent.storage.write_private_key``.
"""

import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.protocol.errors import KeyFormatError

__all__ = [
    "Ed25519PrivateKey",
    "Ed25519PublicKey",
    "generate_private_key",
    "key_id",
    "load_private_key_pem",
    "load_public_key_hex",
    "load_public_key_pem",
    "private_key_to_pem",
    "public_key_hex",
    "public_key_to_pem",
    "sign_bytes",
    "signature_valid",
]


def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _public(key: Ed25519PrivateKey | Ed25519PublicKey) -> Ed25519PublicKey:
    return key.public_key() if isinstance(key, Ed25519PrivateKey) else key


def public_key_hex(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    raw = _public(key).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw.hex()


def key_id(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """sha256 of the raw public key, hex: stable across PEM re-encodings."""
    return hashlib.sha256(bytes.fromhex(public_key_hex(key))).hexdigest()


def private_key_to_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key_to_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    return _public(key).public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private_key_pem(data: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFormatError(f"not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFormatError(f"expected an Ed25519 key, got {type(key).__name__}")
    return key


def load_public_key_pem(data: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFormatError(f"not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFormatError(f"expected an Ed25519 key, got {type(key).__name__}")
    return key


def load_public_key_hex(text: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text))
    except ValueError as exc:
        raise KeyFormatError(f"not a raw Ed25519 public key: {exc}") from exc


def sign_bytes(key: Ed25519PrivateKey, data: bytes) -> str:
    return key.sign(data).hex()


def signature_valid(public: Ed25519PublicKey, signature_hex: str, data: bytes) -> bool:
    try:
        public.verify(bytes.fromhex(signature_hex), data)
    except (InvalidSignature, ValueError):
        return False
    return True
