"""EdgeFleet's wire protocol: canonical JSON, keys, signed metadata, topics,
messages and the verification rules. Pure (no network or disk I/O); shared by
the agent and the server.
"""

from agent.protocol.canonical import canonical_bytes, canonical_sha256, parse_json
from agent.protocol.envelope import Envelope, check_signatures, sign_envelope
from agent.protocol.errors import *  # noqa: F403
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
from agent.protocol.topics import TopicKind, device_topic, parse_topic, subscription, validate_device_id
from agent.protocol.verify import (
    DeviceFacts,
    VerifiedUpdate,
    choose_variant,
    load_trusted_root,
    verify_artifact,
    verify_release,
    verify_root_update,
    verify_update,
)

__all__ = [
    "Action", "ArtifactVariant", "Compatibility", "DeviceFacts", "Directive", "Envelope", "Release",
    "ReleaseRef", "Role", "RoleSpec", "Root", "Runtime", "TensorSpec", "TopicKind", "VerifiedUpdate",
    "canonical_bytes", "canonical_sha256", "check_signatures", "choose_variant", "device_topic",
    "load_trusted_root", "parse_json", "parse_topic", "sign_envelope", "subscription",
    "validate_device_id", "verify_artifact", "verify_release", "verify_root_update", "verify_update",
]
