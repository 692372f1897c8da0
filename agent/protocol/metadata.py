"""Typed metadata documents: root, release and directive.

Each type converts to the plain ``dict`` that is signed (``to_dict``) and is
parsed back strictly (``from_dict``), raising ``MalformedDocumentError`` for
wrong types, missing or unknown fields and out-of-range values.
"""

import enum
import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agent.protocol import fields as f
from agent.protocol.errors import MalformedDocumentError
from agent.protocol.topics import validate_device_id

SPEC_VERSION = 1
KEY_ID = f.HEX64
PUBLIC_KEY_HEX = f.HEX64


class Role(enum.StrEnum):
    ROOT = "root"
    RELEASE = "release"
    ROLLOUT = "rollout"


class Runtime(enum.StrEnum):
    ONNXRUNTIME = "onnxruntime"
    TFLITE = "tflite"
    AGENT = "agent"  # an agent release: a wheel of edgefleet the agent installs into its other slot


class Action(enum.StrEnum):
    INSTALL = "install"  # fetch the fitting variant and serve it
    ROLLBACK = "rollback"  # serve the previous model again
    SHADOW = "shadow"  # fetch the fitting variant and run it next to the served model, answers discarded
    DROP_SHADOW = "drop_shadow"  # remove the shadow model


def _check_type(obj: dict[str, Any], expected: str, what: str) -> None:
    if obj.get("_type") != expected:
        raise MalformedDocumentError(f"{what} must have _type {expected!r}, got {obj.get('_type')!r}")
    if f.integer(obj, "spec_version", what, 1, 1000) != SPEC_VERSION:
        raise MalformedDocumentError(f"{what} spec_version {obj['spec_version']} is not supported")


def _enum(enum_type: type[enum.StrEnum], obj: dict[str, Any], key: str, what: str) -> Any:
    value = f.get(obj, key, what)
    try:
        return enum_type(value)
    except ValueError:
        allowed = ", ".join(member.value for member in enum_type)
        raise MalformedDocumentError(f"{what}.{key}={value!r} is not one of {allowed}") from None


# -- root --------------------------------------------------------------------


@dataclass(frozen=True)
class RoleSpec:
    keyids: tuple[str, ...]
    threshold: int

    def to_dict(self) -> dict[str, Any]:
        return {"keyids": list(self.keyids), "threshold": self.threshold}

    @classmethod
    def from_dict(cls, obj: Any, what: str) -> "RoleSpec":
        obj = f.mapping(obj, what)
        f.only_keys(obj, {"keyids", "threshold"}, what)
        keyids = f.string_list(obj, "keyids", what)
        for keyid in keyids:
            if not KEY_ID.fullmatch(keyid):
                raise MalformedDocumentError(f"{what}.keyids has an invalid key id {keyid!r}")
        if len(set(keyids)) != len(keyids):
            raise MalformedDocumentError(f"{what}.keyids lists a key twice")
        threshold = f.integer(obj, "threshold", what, 1, 64)
        if threshold > len(keyids):
            raise MalformedDocumentError(f"{what}.threshold {threshold} exceeds its {len(keyids)} keys")
        return cls(keyids, threshold)


@dataclass(frozen=True)
class Root:
    version: int
    expires: datetime
    keys: dict[str, str]  # key id -> raw Ed25519 public key, hex
    roles: dict[Role, RoleSpec]

    def to_dict(self) -> dict[str, Any]:
        return {
            "_type": "root",
            "spec_version": SPEC_VERSION,
            "version": self.version,
            "expires": f.format_time(self.expires),
            "keys": {keyid: {"keytype": "ed25519", "public": public} for keyid, public in self.keys.items()},
            "roles": {role.value: spec.to_dict() for role, spec in self.roles.items()},
        }

    @classmethod
    def from_dict(cls, obj: Any) -> "Root":
        what = "root"
        obj = f.mapping(obj, what)
        f.only_keys(obj, {"_type", "spec_version", "version", "expires", "keys", "roles"}, what)
        _check_type(obj, "root", what)
        raw_keys = f.mapping(f.get(obj, "keys", what), "root.keys")
        if len(raw_keys) > 256:
            raise MalformedDocumentError("root.keys lists more than 256 keys")
        keys: dict[str, str] = {}
        for keyid, entry in raw_keys.items():
            if not KEY_ID.fullmatch(keyid):
                raise MalformedDocumentError(f"root.keys has an invalid key id {keyid!r}")
            entry = f.mapping(entry, f"root.keys[{keyid}]")
            f.only_keys(entry, {"keytype", "public"}, "root.keys[]")
            if entry.get("keytype") != "ed25519":
                raise MalformedDocumentError("root.keys[].keytype must be 'ed25519'")
            public = f.string(entry, "public", "root.keys[]", PUBLIC_KEY_HEX)
            if hashlib.sha256(bytes.fromhex(public)).hexdigest() != keyid:
                # One key under two ids would count twice towards a threshold.
                raise MalformedDocumentError(f"root.keys: key id {keyid[:16]}... is not the sha256 of its key")
            keys[keyid] = public
        raw_roles = f.mapping(f.get(obj, "roles", what), "root.roles")
        if set(raw_roles) != {role.value for role in Role}:
            raise MalformedDocumentError(f"root.roles must define exactly {[r.value for r in Role]}")
        roles = {Role(name): RoleSpec.from_dict(spec, f"root.roles.{name}") for name, spec in raw_roles.items()}
        for role, spec in roles.items():
            missing = set(spec.keyids) - set(keys)
            if missing:
                raise MalformedDocumentError(f"root.roles.{role} names unknown keys {sorted(missing)}")
        return cls(f.integer(obj, "version", what, 1), f.timestamp(obj, "expires", what), keys, roles)


# -- release -----------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[int | None, ...]  # None marks a dynamic dimension

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, obj: Any, what: str) -> "TensorSpec":
        obj = f.mapping(obj, what)
        f.only_keys(obj, {"name", "dtype", "shape"}, what)
        shape = f.get(obj, "shape", what)
        if not isinstance(shape, list) or len(shape) > 16:
            raise MalformedDocumentError(f"{what}.shape must be a list of <= 16 dimensions")
        for dim in shape:
            if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or not 0 <= dim <= f.MAX_INT):
                raise MalformedDocumentError(f"{what}.shape dimensions must be null or integers >= 0")
        return cls(f.string(obj, "name", what, max_len=256), f.string(obj, "dtype", what, max_len=32), tuple(shape))


@dataclass(frozen=True)
class Compatibility:
    arch: tuple[str, ...] = ()  # empty: any architecture
    min_ram_mb: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"arch": list(self.arch), "min_ram_mb": self.min_ram_mb}

    @classmethod
    def from_dict(cls, obj: Any, what: str) -> "Compatibility":
        obj = f.mapping(obj, what)
        f.only_keys(obj, {"arch", "min_ram_mb"}, what)
        return cls(f.string_list(obj, "arch", what), f.integer(obj, "min_ram_mb", what, 0, 1 << 30))


@dataclass(frozen=True)
class ArtifactVariant:
    name: str  # e.g. "onnx-fp32"
    path: str  # file name inside the model slot
    runtime: Runtime
    precision: str
    sha256: str
    length: int
    compatibility: Compatibility = field(default_factory=Compatibility)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "runtime": self.runtime.value,
            "precision": self.precision,
            "sha256": self.sha256,
            "length": self.length,
            "compatibility": self.compatibility.to_dict(),
        }

    @classmethod
    def from_dict(cls, obj: Any, what: str) -> "ArtifactVariant":
        obj = f.mapping(obj, what)
        f.only_keys(obj, {"name", "path", "runtime", "precision", "sha256", "length", "compatibility"}, what)
        return cls(
            name=f.string(obj, "name", what, f.NAME_PATTERN),
            path=f.safe_relative_path(obj, "path", what),
            runtime=_enum(Runtime, obj, "runtime", what),
            precision=f.string(obj, "precision", what, f.NAME_PATTERN),
            sha256=f.sha256_hex(obj, "sha256", what),
            length=f.integer(obj, "length", what, 1, 1 << 40),
            compatibility=Compatibility.from_dict(f.get(obj, "compatibility", what), f"{what}.compatibility"),
        )


@dataclass(frozen=True)
class Release:
    name: str
    version: int
    variants: tuple[ArtifactVariant, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    created: datetime
    expires: datetime
    reference_profile_sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "_type": "release",
            "spec_version": SPEC_VERSION,
            "name": self.name,
            "version": self.version,
            "variants": [variant.to_dict() for variant in self.variants],
            "inputs": [spec.to_dict() for spec in self.inputs],
            "outputs": [spec.to_dict() for spec in self.outputs],
            "created": f.format_time(self.created),
            "expires": f.format_time(self.expires),
            "reference_profile_sha256": self.reference_profile_sha256,
        }

    @classmethod
    def from_dict(cls, obj: Any) -> "Release":
        what = "release"
        obj = f.mapping(obj, what)
        f.only_keys(obj, {"_type", "spec_version", "name", "version", "variants", "inputs", "outputs",
                          "created", "expires", "reference_profile_sha256"}, what)
        _check_type(obj, "release", what)
        variants = tuple(ArtifactVariant.from_dict(v, "release.variants[]")
                         for v in f.object_list(obj, "variants", what, 64))
        if not variants:
            raise MalformedDocumentError("release.variants must not be empty")
        if len({v.name for v in variants}) != len(variants):
            raise MalformedDocumentError("release.variants names must be unique")
        reference = obj.get("reference_profile_sha256")
        return cls(
            name=f.string(obj, "name", what, f.NAME_PATTERN),
            version=f.integer(obj, "version", what, 1),
            variants=variants,
            inputs=tuple(TensorSpec.from_dict(t, "release.inputs[]") for t in f.object_list(obj, "inputs", what)),
            outputs=tuple(TensorSpec.from_dict(t, "release.outputs[]") for t in f.object_list(obj, "outputs", what)),
            created=f.timestamp(obj, "created", what),
            expires=f.timestamp(obj, "expires", what),
            reference_profile_sha256=None if reference is None else f.sha256_hex(obj, "reference_profile_sha256", what),
        )


# -- directive ---------------------------------------------------------------


@dataclass(frozen=True)
class ReleaseRef:
    name: str
    version: int
    sha256: str  # of the canonical bytes of the signed release envelope

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, obj: Any, what: str) -> "ReleaseRef":
        obj = f.mapping(obj, what)
        f.only_keys(obj, {"name", "version", "sha256"}, what)
        return cls(f.string(obj, "name", what, f.NAME_PATTERN), f.integer(obj, "version", what, 1),
                   f.sha256_hex(obj, "sha256", what))


@dataclass(frozen=True)
class Directive:
    device_id: str
    sequence: int
    action: Action
    release: ReleaseRef
    issued: datetime
    expires: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "_type": "directive",
            "spec_version": SPEC_VERSION,
            "device_id": self.device_id,
            "sequence": self.sequence,
            "action": self.action.value,
            "release": self.release.to_dict(),
            "issued": f.format_time(self.issued),
            "expires": f.format_time(self.expires),
        }

    @classmethod
    def from_dict(cls, obj: Any) -> "Directive":
        what = "directive"
        obj = f.mapping(obj, what)
        f.only_keys(obj, {"_type", "spec_version", "device_id", "sequence", "action", "release", "issued",
                          "expires"}, what)
        _check_type(obj, "directive", what)
        return cls(
            device_id=validate_device_id(f.get(obj, "device_id", what)),
            sequence=f.integer(obj, "sequence", what, 1),
            action=_enum(Action, obj, "action", what),
            release=ReleaseRef.from_dict(f.get(obj, "release", what), "directive.release"),
            issued=f.timestamp(obj, "issued", what),
            expires=f.timestamp(obj, "expires", what),
        )
