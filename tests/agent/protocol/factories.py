"""Builders for keys and signed documents used by the protocol tests.

Standard library, cryptography and the protocol only: these tests also run in the legacy venv.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from agent.protocol.envelope import Envelope, sign_envelope
from agent.protocol.keys import Ed25519PrivateKey, generate_private_key, key_id, public_key_hex
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

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DEVICE_ID = "pi-kitchen-01"
ARTIFACT = b"pretend these are model bytes" * 8


def later(days: float = 30) -> datetime:
    return NOW + timedelta(days=days)


@dataclass
class KeySet:
    """Private keys per role; ``root_keys`` etc. hold as many keys as the test asks for."""

    root: list[Ed25519PrivateKey] = field(default_factory=lambda: [generate_private_key()])
    release: list[Ed25519PrivateKey] = field(default_factory=lambda: [generate_private_key()])
    rollout: list[Ed25519PrivateKey] = field(default_factory=lambda: [generate_private_key()])

    @classmethod
    def generate(cls, root: int = 1, release: int = 1, rollout: int = 1) -> KeySet:
        return cls([generate_private_key() for _ in range(root)], [generate_private_key() for _ in range(release)],
                   [generate_private_key() for _ in range(rollout)])


def make_root(keys: KeySet, version: int = 1, expires: datetime | None = None, root_threshold: int = 1,
              release_threshold: int = 1, rollout_threshold: int = 1) -> Root:
    everyone = [*keys.root, *keys.release, *keys.rollout]
    return Root(
        version=version,
        expires=expires or later(365),
        keys={key_id(key): public_key_hex(key) for key in everyone},
        roles={
            Role.ROOT: RoleSpec(tuple(key_id(key) for key in keys.root), root_threshold),
            Role.RELEASE: RoleSpec(tuple(key_id(key) for key in keys.release), release_threshold),
            Role.ROLLOUT: RoleSpec(tuple(key_id(key) for key in keys.rollout), rollout_threshold),
        },
    )


def make_variant(name: str = "onnx-fp32", runtime: Runtime = Runtime.ONNXRUNTIME, arch: tuple[str, ...] = (),
                 min_ram_mb: int = 0, data: bytes = ARTIFACT) -> ArtifactVariant:
    return ArtifactVariant(
        name=name,
        path=f"{name}.{'onnx' if runtime is Runtime.ONNXRUNTIME else 'tflite'}",
        runtime=runtime,
        precision="fp32",
        sha256=hashlib.sha256(data).hexdigest(),
        length=len(data),
        compatibility=Compatibility(arch, min_ram_mb),
    )


def make_release(name: str = "digits", version: int = 3, variants: tuple[ArtifactVariant, ...] | None = None,
                 expires: datetime | None = None) -> Release:
    return Release(
        name=name,
        version=version,
        variants=variants or (make_variant(),),
        inputs=(TensorSpec("input", "float32", (None, 64)),),
        outputs=(TensorSpec("label", "int64", (None,)), TensorSpec("probabilities", "float32", (None, 10))),
        created=NOW - timedelta(days=1),
        expires=expires or later(90),
        reference_profile_sha256=hashlib.sha256(b"profile").hexdigest(),
    )


def make_directive(release_envelope: Envelope, release: Release, device_id: str = DEVICE_ID, sequence: int = 7,
                   action: Action = Action.INSTALL, expires: datetime | None = None) -> Directive:
    return Directive(
        device_id=device_id,
        sequence=sequence,
        action=action,
        release=ReleaseRef(release.name, release.version, release_envelope.sha256()),
        issued=NOW - timedelta(minutes=5),
        expires=expires or later(1),
    )


def sign(document: Root | Release | Directive | dict[str, Any], keys: list[Ed25519PrivateKey]) -> Envelope:
    signed = document if isinstance(document, dict) else document.to_dict()
    return sign_envelope(signed, keys)


def device(arch: str = "aarch64", ram_mb: int = 1024,
           runtimes: tuple[str, ...] = ("onnxruntime", "tflite")) -> DeviceFacts:
    return DeviceFacts(DEVICE_ID, arch, ram_mb, runtimes)


@dataclass
class Scenario:
    """A trusted root and a valid directive + release pair for ``DEVICE_ID``."""

    keys: KeySet
    root: Root
    root_document: dict[str, Any]
    release: Release
    release_document: dict[str, Any]
    directive: Directive
    directive_document: dict[str, Any]

    def documents(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Deep copies of (directive, release) documents, safe to mutate."""
        return copy.deepcopy(self.directive_document), copy.deepcopy(self.release_document)

    def with_release(self, new_release: Release, release_keys: list[Ed25519PrivateKey] | None = None,
                     **directive_changes: Any) -> Scenario:
        """The same root, ``new_release`` and a directive referencing it, with ``directive_changes``."""
        release_envelope = sign(new_release, release_keys or self.keys.release)
        directive = replace(make_directive(release_envelope, new_release), **directive_changes)
        return replace(self, release=new_release, release_document=release_envelope.to_dict(), directive=directive,
                       directive_document=sign(directive, self.keys.rollout).to_dict())


def scenario(keys: KeySet | None = None, **root_options: Any) -> Scenario:
    keys = keys or KeySet.generate()
    root = make_root(keys, **root_options)
    release = make_release()
    release_envelope = sign(release, keys.release)
    directive = make_directive(release_envelope, release)
    return Scenario(
        keys=keys,
        root=root,
        root_document=sign(root, keys.root).to_dict(),
        release=release,
        release_document=release_envelope.to_dict(),
        directive=directive,
        directive_document=sign(directive, keys.rollout).to_dict(),
    )
