"""A verified directive the agent has to carry out, and how it is rebuilt after a restart."""

import re
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agent.errors import StateFileError
from agent.protocol import fields
from agent.protocol.errors import ProtocolError
from agent.protocol.metadata import Action, ArtifactVariant, Directive, Release, Root, Runtime
from agent.protocol.verify import DeviceFacts, verify_update
from agent.state_store import DeploymentRecord

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass
class Job:
    directive: Directive
    release: Release
    variant: ArtifactVariant | None  # None for a rollback or a shadow drop
    directive_document: dict[str, Any]
    release_document: dict[str, Any]
    accepted_at: datetime
    resumed: bool = False  # rebuilt from state.json after a restart (already begun)
    cancel: threading.Event = field(default_factory=threading.Event)
    superseded_by: int | None = None

    @property
    def sequence(self) -> int:
        return self.directive.sequence

    @property
    def is_rollback(self) -> bool:
        return self.directive.action is Action.ROLLBACK

    @property
    def is_shadow(self) -> bool:
        """Install into the shadow slot, next to the served model."""
        return self.directive.action is Action.SHADOW

    @property
    def is_drop_shadow(self) -> bool:
        return self.directive.action is Action.DROP_SHADOW

    @property
    def is_agent_update(self) -> bool:
        """Install a new version of the agent itself (``agent.selfupdate``), not a model."""
        return self.variant is not None and self.variant.runtime is Runtime.AGENT

    @property
    def is_agent_release(self) -> bool:
        return all(variant.runtime is Runtime.AGENT for variant in self.release.variants)

    def begin_fields(self) -> dict[str, Any]:
        """What the tracker records when this job begins (NEW_DIRECTIVE)."""
        return {
            "action": self.directive.action.value,
            "release_name": self.release.name,
            "release_version": self.release.version,
            "variant": self.variant.name if self.variant else None,
            "target_sha256": self.variant.sha256 if self.variant else None,
            "accepted_at": fields.format_time(self.accepted_at),
            "directive": self.directive_document,
            "release": self.release_document,
        }


def rebuild_job(record: DeploymentRecord, root: Root, facts: DeviceFacts) -> Job:
    """The job of the deployment ``record`` tracks, re-verified as it was when accepted."""
    if record.directive is None or record.release is None or record.accepted_at is None:
        raise StateFileError("state.json lacks the directive of the deployment in flight")
    try:
        accepted_at = fields.parse_time(record.accepted_at, "accepted_at")
        update = verify_update(root, record.directive, record.release, facts, record.sequence - 1, accepted_at)
    except ProtocolError as exc:
        raise StateFileError(f"the stored directive no longer verifies: {type(exc).__name__}: {exc}") from None
    if update.directive.sequence != record.sequence:
        raise StateFileError(f"stored directive has sequence {update.directive.sequence}, state says {record.sequence}")
    return Job(update.directive, update.release, update.variant, record.directive, record.release, accepted_at,
               resumed=True)


def claimed_identity(message_directive: Any) -> tuple[int, str | None, int | None]:
    """(sequence, release name, release version) a directive claims, for reporting one that failed verification."""
    signed = message_directive.get("signed") if isinstance(message_directive, dict) else None
    if not isinstance(signed, dict):
        return 0, None, None
    sequence = signed.get("sequence")
    sequence = sequence if isinstance(sequence, int) and not isinstance(sequence, bool) and sequence >= 0 else 0
    release = signed.get("release")
    ref: dict[str, Any] = release if isinstance(release, dict) else {}
    name = ref.get("name") if isinstance(ref.get("name"), str) and NAME.fullmatch(ref["name"]) else None
    version = ref.get("version")
    version = version if isinstance(version, int) and not isinstance(version, bool) and version >= 1 else None
    return min(sequence, fields.MAX_INT), name, version
