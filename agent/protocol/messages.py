"""MQTT message bodies exchanged between the server and devices.

All are canonical JSON. ``directive`` carries the signed directive and the
signed release it references (both envelopes as objects); ``status`` reports
a deployment state change; ``presence`` is retained, doubles as heartbeat
with inventory, and the broker publishes the offline form as last will.
"""

import time
from dataclasses import dataclass, field
from typing import Any

from agent.protocol import fields as f
from agent.protocol.canonical import canonical_bytes, parse_json
from agent.protocol.errors import MalformedDocumentError
from agent.protocol.topics import validate_device_id

MAX_DIRECTIVE_MESSAGE_BYTES = 128 * 1024
MAX_DEVICE_MESSAGE_BYTES = 64 * 1024

# Deployment states reported on ``status`` (the agent's state machine states).
DEPLOYMENT_STATES = (
    "idle", "notified", "downloading", "verifying", "installing", "health_check",
    "succeeded", "failed", "rolled_back", "rejected",
)
FINAL_STATES = ("succeeded", "failed", "rolled_back", "rejected")


@dataclass(frozen=True)
class DirectiveMessage:
    directive: dict[str, Any]  # signed directive envelope
    release: dict[str, Any]  # signed release envelope the directive references

    def encode(self) -> bytes:
        return canonical_bytes({"directive": self.directive, "release": self.release})

    @staticmethod
    def join(directive: bytes, release: bytes) -> bytes:
        """``encode()`` from the two envelopes' canonical bytes (a server sending one release to many
        devices encodes it once): canonical JSON nests canonical JSON, keys in sorted order."""
        return b'{"directive":' + directive + b',"release":' + release + b"}"

    @classmethod
    def decode(cls, payload: bytes) -> "DirectiveMessage":
        obj = f.mapping(parse_json(payload, MAX_DIRECTIVE_MESSAGE_BYTES), "directive message")
        f.only_keys(obj, {"directive", "release"}, "directive message")
        return cls(f.mapping(f.get(obj, "directive", "directive message"), "directive"),
                   f.mapping(f.get(obj, "release", "directive message"), "release"))


@dataclass(frozen=True)
class StatusMessage:
    device_id: str
    state: str
    sequence: int  # directive sequence this state belongs to (0: none)
    release_name: str | None = None
    release_version: int | None = None
    variant: str | None = None
    reason: str | None = None
    timestamp: float = field(default_factory=time.time)

    def encode(self) -> bytes:
        return canonical_bytes({
            "type": "status",
            "device_id": self.device_id,
            "state": self.state,
            "sequence": self.sequence,
            "release_name": self.release_name,
            "release_version": self.release_version,
            "variant": self.variant,
            "reason": self.reason,
            "timestamp": round(self.timestamp, 3),
        })

    @classmethod
    def decode(cls, payload: bytes) -> "StatusMessage":
        what = "status message"
        obj = f.mapping(parse_json(payload, MAX_DEVICE_MESSAGE_BYTES), what)
        f.only_keys(obj, {"type", "device_id", "state", "sequence", "release_name", "release_version",
                          "variant", "reason", "timestamp"}, what)
        if obj.get("type") != "status":
            raise MalformedDocumentError("status message must have type 'status'")
        state = f.string(obj, "state", what)
        if state not in DEPLOYMENT_STATES:
            raise MalformedDocumentError(f"unknown deployment state {state!r}")
        version = obj.get("release_version")
        return cls(
            device_id=validate_device_id(f.get(obj, "device_id", what)),
            state=state,
            sequence=f.integer(obj, "sequence", what),
            release_name=f.optional_string(obj, "release_name", what, f.NAME_PATTERN),
            release_version=None if version is None else f.integer(obj, "release_version", what, 1),
            variant=f.optional_string(obj, "variant", what, f.NAME_PATTERN),
            reason=None if obj.get("reason") is None else f.string(obj, "reason", what, max_len=2000),
            timestamp=_timestamp(obj, what),
        )


@dataclass(frozen=True)
class InstalledModel:
    name: str
    version: int
    variant: str
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "variant": self.variant, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, obj: Any) -> "InstalledModel":
        what = "presence.models[]"
        obj = f.mapping(obj, what)
        f.only_keys(obj, {"name", "version", "variant", "sha256"}, what)
        return cls(f.string(obj, "name", what, f.NAME_PATTERN), f.integer(obj, "version", what, 1),
                   f.string(obj, "variant", what, f.NAME_PATTERN), f.sha256_hex(obj, "sha256", what))


@dataclass(frozen=True)
class PresenceMessage:
    device_id: str
    online: bool
    agent_version: str | None = None
    uptime_s: float | None = None
    models: tuple[InstalledModel, ...] = ()
    deployment_state: str | None = None
    timestamp: float = field(default_factory=time.time)

    def encode(self) -> bytes:
        return canonical_bytes({
            "type": "presence",
            "device_id": self.device_id,
            "online": self.online,
            "agent_version": self.agent_version,
            "uptime_s": None if self.uptime_s is None else round(self.uptime_s, 3),
            "models": [model.to_dict() for model in self.models],
            "deployment_state": self.deployment_state,
            "timestamp": round(self.timestamp, 3),
        })

    @classmethod
    def decode(cls, payload: bytes) -> "PresenceMessage":
        what = "presence message"
        obj = f.mapping(parse_json(payload, MAX_DEVICE_MESSAGE_BYTES), what)
        f.only_keys(obj, {"type", "device_id", "online", "agent_version", "uptime_s", "models",
                          "deployment_state", "timestamp"}, what)
        if obj.get("type") != "presence":
            raise MalformedDocumentError("presence message must have type 'presence'")
        online = f.get(obj, "online", what)
        if not isinstance(online, bool):
            raise MalformedDocumentError("presence.online must be true or false")
        uptime = obj.get("uptime_s")
        if uptime is not None and (isinstance(uptime, bool) or not isinstance(uptime, int | float) or uptime < 0):
            raise MalformedDocumentError("presence.uptime_s must be a number >= 0")
        state = obj.get("deployment_state")
        if state is not None and state not in DEPLOYMENT_STATES:
            raise MalformedDocumentError(f"unknown deployment state {state!r}")
        return cls(
            device_id=validate_device_id(f.get(obj, "device_id", what)),
            online=online,
            agent_version=f.optional_string(obj, "agent_version", what),
            uptime_s=uptime,
            models=tuple(InstalledModel.from_dict(m) for m in f.object_list(obj, "models", what, 64))
            if "models" in obj else (),
            deployment_state=state,
            timestamp=_timestamp(obj, what),
        )


def _timestamp(obj: dict[str, Any], what: str) -> float:
    value = f.get(obj, "timestamp", what)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e11:
        raise MalformedDocumentError(f"{what}.timestamp must be unix seconds")
    return float(value)
