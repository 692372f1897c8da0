"""Ed25519 keys: PEM round trips, key ids, signatures, and typed errors for bad key material."""

import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent.protocol.errors import KeyFormatError
from agent.protocol.keys import (
    generate_private_key,
    key_id,
    load_private_key_pem,
    load_public_key_hex,
    load_public_key_pem,
    private_key_to_pem,
    public_key_hex,
    public_key_to_pem,
    sign_bytes,
    signature_valid,
)


def test_private_key_pem_round_trip() -> None:
    key = generate_private_key()
    loaded = load_private_key_pem(private_key_to_pem(key))
    assert public_key_hex(loaded) == public_key_hex(key)


def test_public_key_pem_and_hex_round_trip() -> None:
    key = generate_private_key()
    assert public_key_hex(load_public_key_pem(public_key_to_pem(key))) == public_key_hex(key)
    assert public_key_hex(load_public_key_hex(public_key_hex(key))) == public_key_hex(key)


def test_key_id_is_the_sha256_of_the_raw_public_key() -> None:
    key = generate_private_key()
    assert key_id(key) == key_id(key.public_key()) == hashlib.sha256(bytes.fromhex(public_key_hex(key))).hexdigest()
    assert key_id(key) != key_id(generate_private_key())


def test_signatures_verify_only_for_the_signed_bytes_and_key() -> None:
    key = generate_private_key()
    signature = sign_bytes(key, b"payload")
    assert signature_valid(key.public_key(), signature, b"payload")
    assert not signature_valid(key.public_key(), signature, b"payload!")
    assert not signature_valid(generate_private_key().public_key(), signature, b"payload")
    assert not signature_valid(key.public_key(), "zz", b"payload")
    assert not signature_valid(key.public_key(), "", b"payload")


def other_curve_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.mark.parametrize("data", [
    b"", b"garbage", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    other_curve_key().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()),
    generate_private_key().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.BestAvailableEncryption(b"secret")),
    public_key_to_pem(generate_private_key()),
], ids=["empty", "garbage", "truncated", "ecdsa", "encrypted", "public"])
def test_bad_private_keys(data: bytes) -> None:
    with pytest.raises(KeyFormatError):
        load_private_key_pem(data)


@pytest.mark.parametrize("data", [
    b"garbage",
    other_curve_key().public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo),
    private_key_to_pem(generate_private_key()),
], ids=["garbage", "ecdsa", "private"])
def test_bad_public_keys(data: bytes) -> None:
    with pytest.raises(KeyFormatError):
        load_public_key_pem(data)


@pytest.mark.parametrize("text", ["", "zz" * 32, "ab" * 31, "ab" * 33])
def test_bad_public_key_hex(text: str) -> None:
    with pytest.raises(KeyFormatError):
        load_public_key_hex(text)
