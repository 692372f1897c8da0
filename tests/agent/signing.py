"""A miniature fleet server for agent tests: real keys, real signatures, real model files.

Standard library, cryptography, numpy and the protocol only (the legacy venv runs these tests too).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.protocol.envelope import Envelope, sign_envelope
from agent.protocol.keys import Ed25519PrivateKey, generate_private_key, key_id, public_key_hex
from agent.protocol.messages import DirectiveMessage
from agent.protocol.metadata import (
    Action,
    ArtifactVariant,
    Compatibility,
    Directive,
    Release,
    ReleaseRef,
    Role,
    RoleSpec,
    Root,
    Runtime,
    TensorSpec,
)
from agent.protocol.verify import DeviceFacts

MODELS = Path(__file__).resolve().parents[1] / "fixtures" / "models"
ONNX_MODEL = MODELS / "digits_mlp.onnx"
TFLITE_MODEL = MODELS / "digits_mlp.tflite"
SAMPLE = MODELS / "digits_sample.npy"
LABELS = MODELS / "digits_labels.npy"
DEVICE_ID = "dev-1"

DIGITS_INPUTS = (TensorSpec("input", "float32", (None, 64)),)
DIGITS_OUTPUTS = (TensorSpec("label", "int64", (None,)), TensorSpec("probabilities", "float32", (None, 10)))
TFLITE_INPUTS = (TensorSpec("serving_default_input:0", "float32", (None, 64)),)
TFLITE_OUTPUTS = (TensorSpec("StatefulPartitionedCall_1:0", "float32", (None, 10)),)


def distinct_onnx(marker: str) -> bytes:
    """The digits ONNX model with its own bytes: a ModelProto.doc_string (field 6) appended to the protobuf."""
    text = f"edgefleet agent test {marker}".encode()
    assert len(text) < 128
    return ONNX_MODEL.read_bytes() + bytes([(6 << 3) | 2, len(text)]) + text


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def onnx_variant(data: bytes, name: str = "onnx-fp32", runtime: Runtime = Runtime.ONNXRUNTIME,
                 path: str = "model.onnx") -> ArtifactVariant:
    return ArtifactVariant(name, path, runtime, "fp32", hashlib.sha256(data).hexdigest(), len(data), Compatibility())


class MiniFleet:
    """Keys for the three roles, a signed root, and builders for releases and directives."""

    def __init__(self, device_id: str = DEVICE_ID, root_expires: datetime | None = None) -> None:
        self.device_id = device_id
        self.root_key = generate_private_key()
        self.release_key = generate_private_key()
        self.rollout_key = generate_private_key()
        keys = [self.root_key, self.release_key, self.rollout_key]
        self.root = Root(
            version=1,
            expires=root_expires or now() + timedelta(days=365),
            keys={key_id(key): public_key_hex(key) for key in keys},
            roles={
                Role.ROOT: RoleSpec((key_id(self.root_key),), 1),
                Role.RELEASE: RoleSpec((key_id(self.release_key),), 1),
                Role.ROLLOUT: RoleSpec((key_id(self.rollout_key),), 1),
            },
        )
        self.root_document = sign_envelope(self.root.to_dict(), [self.root_key]).to_dict()
        self.sequence = 0

    def facts(self, runtimes: tuple[str, ...] = ("onnxruntime", "tflite")) -> DeviceFacts:
        return DeviceFacts(self.device_id, "x86_64", 4096, runtimes)

    def release(self, variants: tuple[ArtifactVariant, ...], name: str = "digits", version: int = 1,
                inputs: tuple[TensorSpec, ...] = DIGITS_INPUTS, outputs: tuple[TensorSpec, ...] = DIGITS_OUTPUTS,
                key: Ed25519PrivateKey | None = None) -> dict[str, Any]:
        release = Release(name, version, variants, inputs, outputs, now() - timedelta(minutes=1),
                          now() + timedelta(days=30))
        return sign_envelope(release.to_dict(), [key or self.release_key]).to_dict()

    def directive(self, release_document: dict[str, Any], action: Action = Action.INSTALL,
                  sequence: int | None = None, expires_in: timedelta = timedelta(hours=1),
                  key: Ed25519PrivateKey | None = None) -> dict[str, Any]:
        if sequence is None:
            self.sequence += 1
            sequence = self.sequence
        signed = release_document["signed"]
        directive = Directive(
            self.device_id, sequence, action,
            ReleaseRef(signed["name"], signed["version"], Envelope.from_dict(release_document).sha256()),
            now() - timedelta(seconds=5), now() + expires_in,
        )
        return sign_envelope(directive.to_dict(), [key or self.rollout_key]).to_dict()

    def message(self, release_document: dict[str, Any], **directive_options: Any) -> bytes:
        return DirectiveMessage(self.directive(release_document, **directive_options), release_document).encode()
