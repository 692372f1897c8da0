"""Reference profiles on the server: copied from the artifact store into the database the first
time a window binned on them arrives, then parsed once per process (bounded cache)."""

import logging
import threading
from collections import OrderedDict

from sqlmodel import Session

from agent.protocol.errors import ProtocolError
from agent.protocol.profile import ReferenceProfile
from fleet_server.models.telemetry import ReferenceProfileRecord
from fleet_server.services.artifact_store import ArtifactStore

logger = logging.getLogger(__name__)

CACHE_SIZE = 64

_cache: OrderedDict[str, ReferenceProfile] = OrderedDict()
_cache_lock = threading.Lock()


def parse_profile(sha256: str, document: bytes) -> ReferenceProfile | None:
    """The profile if ``document`` parses and hashes to ``sha256``, else None (logged)."""
    try:
        profile = ReferenceProfile.from_bytes(document)
    except ProtocolError as exc:
        logger.warning("server event=profile_invalid sha256=%s error=%s", sha256, exc)
        return None
    if profile.sha256() != sha256:
        logger.warning("server event=profile_hash_mismatch sha256=%s actual=%s", sha256, profile.sha256())
        return None
    return profile


def record_from_store(store: ArtifactStore, sha256: str) -> ReferenceProfileRecord | None:
    """A database row for the profile stored as artifact ``sha256`` (None if absent or invalid)."""
    path = store.find(sha256)
    if path is None:
        return None
    try:
        document = path.read_bytes()
    except OSError as exc:
        logger.warning("server event=profile_unreadable sha256=%s error=%s", sha256, exc)
        return None
    profile = parse_profile(sha256, document)
    if profile is None:
        return None
    return ReferenceProfileRecord(sha256=sha256, input_name=profile.input_name, samples=profile.samples,
                                  document=profile.to_bytes().decode("utf-8"))


def load_profile(session: Session, sha256: str) -> ReferenceProfile | None:
    """The profile with hash ``sha256`` from the database (cached), or None if it is not stored."""
    with _cache_lock:
        cached = _cache.get(sha256)
        if cached is not None:
            _cache.move_to_end(sha256)
            return cached
    record = session.get(ReferenceProfileRecord, sha256)
    if record is None:
        return None
    profile = parse_profile(sha256, record.document.encode("utf-8"))
    if profile is not None:
        with _cache_lock:
            _cache[sha256] = profile
            while len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
    return profile
