"""The audit hash chain, pure: how an entry is hashed and how a sequence of
entries (from the database or from an export file) is checked.

``entry_hash = sha256(canonical JSON of {seq, at, actor, action, details, prev})``
where ``details`` is the canonical JSON text stored with the entry and ``at``
the UTC time with microseconds. The first entry's ``prev`` is 64 zeros.
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agent.protocol.canonical import canonical_bytes, canonical_sha256
from fleet_server.models.audit import GENESIS_HASH

MAX_DETAILS_BYTES = 64 * 1024


@dataclass(frozen=True)
class ChainEntry:
    seq: int
    created_at: datetime
    actor: str
    action: str
    details: str  # canonical JSON text
    prev_hash: str
    entry_hash: str

    def to_export(self) -> dict[str, Any]:
        return {"seq": self.seq, "created_at": format_time(self.created_at), "actor": self.actor,
                "action": self.action, "details": json.loads(self.details), "prev_hash": self.prev_hash,
                "entry_hash": self.entry_hash}

    @classmethod
    def from_export(cls, obj: Any) -> "ChainEntry":
        """Parse one exported line (already JSON-decoded); ``ValueError`` if it is not one."""
        if not isinstance(obj, dict):
            raise ValueError("an audit line must be a JSON object")
        try:
            return cls(int(obj["seq"]), parse_time(obj["created_at"]), str(obj["actor"]), str(obj["action"]),
                       details_text(obj["details"]), str(obj["prev_hash"]), str(obj["entry_hash"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"an audit line lacks or mistypes {exc}") from None


@dataclass(frozen=True)
class ChainVerdict:
    ok: bool
    entries: int
    last_seq: int
    last_hash: str
    problem: str | None = None


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: Any) -> datetime:
    if not isinstance(text, str):
        raise ValueError("created_at must be a string")
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def details_text(details: Any) -> str:
    """Canonical JSON text of ``details`` (values JSON cannot hold become strings)."""
    normalised = json.loads(json.dumps(details, default=str))
    if not isinstance(normalised, dict):
        raise ValueError("audit details must be a JSON object")
    text = canonical_bytes(normalised).decode("utf-8")
    if len(text.encode("utf-8")) > MAX_DETAILS_BYTES:
        raise ValueError(f"audit details exceed {MAX_DETAILS_BYTES} bytes")
    return text


def compute_hash(seq: int, created_at: datetime, actor: str, action: str, details: str, prev_hash: str) -> str:
    return canonical_sha256({"seq": seq, "at": format_time(created_at), "actor": actor, "action": action,
                             "details": details, "prev": prev_hash})


def verify_chain(entries: Iterable[ChainEntry], head: tuple[int, str] | None = None,
                 start: tuple[int, str] = (0, GENESIS_HASH)) -> ChainVerdict:
    """Check every link, in order; ``head`` (seq, hash) must name the last entry.

    ``start`` is the (seq, hash) the first entry follows: the genesis by default,
    or an anchor the operator recorded earlier when checking a suffix.
    """
    last_seq, last_hash = start
    count = 0
    for entry in entries:
        count += 1
        if entry.seq != last_seq + 1:
            return ChainVerdict(False, count, last_seq, last_hash,
                                f"entry {last_seq + 1} is missing (found {entry.seq} after {last_seq})")
        if entry.prev_hash != last_hash:
            return ChainVerdict(False, count, last_seq, last_hash,
                                f"entry {entry.seq} does not follow entry {last_seq} (prev_hash differs)")
        expected = compute_hash(entry.seq, entry.created_at, entry.actor, entry.action, entry.details,
                                entry.prev_hash)
        if entry.entry_hash != expected:
            return ChainVerdict(False, count, last_seq, last_hash,
                                f"entry {entry.seq} was altered (its content does not match its hash)")
        last_seq, last_hash = entry.seq, entry.entry_hash
    if head is not None and head != (last_seq, last_hash):
        return ChainVerdict(False, count, last_seq, last_hash,
                            f"the chain ends at entry {last_seq} but the head names entry {head[0]}: "
                            "entries were deleted or the head was altered")
    return ChainVerdict(True, count, last_seq, last_hash)
