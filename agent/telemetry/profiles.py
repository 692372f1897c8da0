"""Reference profiles on the device: fetched with the model, checked against the signed hash,
kept in the model's slot as ``reference_profile.json``.

The release names the profile by the sha256 of its canonical bytes; the
profile is a content-addressed artifact on the server. Fetching is best
effort: without a profile the model is installed all the same and its
telemetry simply carries no feature bins.
"""

import hashlib
import logging
import ssl
import threading
import urllib.error
import urllib.request
from pathlib import Path

from agent.errors import ProfileFetchError
from agent.inference import ServedModel
from agent.protocol.errors import ProtocolError
from agent.protocol.metadata import Release
from agent.protocol.profile import MAX_PROFILE_BYTES, ReferenceProfile
from agent.slots import CURRENT, PREVIOUS, SlotStore
from agent.storage import atomic_write_bytes

log = logging.getLogger(__name__)

PROFILE_FILE = "reference_profile.json"
FETCH_TIMEOUT_S = 30.0
PROFILE_SLOTS = (CURRENT, PREVIOUS, "shadow")
FETCH_ATTEMPTS = 3


def check_profile(sha256: str, document: bytes) -> ReferenceProfile:
    """The profile in ``document`` if its bytes hash to ``sha256`` and parse; else ``ProfileFetchError``."""
    actual = hashlib.sha256(document).hexdigest()
    if actual != sha256:
        raise ProfileFetchError(f"reference profile has sha256 {actual[:12]}, the release says {sha256[:12]}")
    try:
        return ReferenceProfile.from_bytes(document)
    except ProtocolError as exc:
        raise ProfileFetchError(f"reference profile {sha256[:12]} is malformed: {exc}") from None


def fetch_profile(base_url: str, credential: str, sha256: str, timeout_s: float = FETCH_TIMEOUT_S,
                  context: ssl.SSLContext | None = None) -> bytes:
    """GET ``/api/v1/artifacts/{sha256}`` (capped at ``MAX_PROFILE_BYTES``) and check it."""
    request = urllib.request.Request(f"{base_url.rstrip('/')}/api/v1/artifacts/{sha256}",
                                     headers={"Authorization": f"Bearer {credential}", "Accept-Encoding": "identity"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s, context=context) as response:
            document = response.read(MAX_PROFILE_BYTES + 1)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise ProfileFetchError(f"artifact server answered HTTP {exc.code} for profile {sha256[:12]}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ProfileFetchError(f"cannot fetch reference profile {sha256[:12]}: {exc}") from None
    if len(document) > MAX_PROFILE_BYTES:
        raise ProfileFetchError(f"reference profile {sha256[:12]} exceeds {MAX_PROFILE_BYTES} bytes")
    check_profile(sha256, document)
    return document


class SlotProfiles:
    """``ProfileLookup`` for the accumulator: the profile kept in the slot of the model being served."""

    def __init__(self, slots: SlotStore) -> None:
        self.slots = slots

    def __call__(self, served: ServedModel) -> tuple[str, ReferenceProfile] | None:
        for slot in PROFILE_SLOTS:
            info = self.slots.read(slot)
            sha256 = getattr(info, "profile_sha256", None)
            if info is None or info.sha256 != served.sha256 or not sha256:
                continue
            path = self.slots.slot_dir(slot) / PROFILE_FILE
            try:
                return sha256, check_profile(sha256, Path(path).read_bytes())
            except (OSError, ProfileFetchError) as exc:
                log.warning("event=profile_unusable slot=%s error=%r", slot, str(exc))
                return None
        return None


class ProfileFetcher:
    """Fetches a release's profile while its model downloads; the runner stages it into the slot."""

    def __init__(self, base_url: str, credential: str, directory: Path, context: ssl.SSLContext | None = None,
                 retry_delay_s: float = 1.0) -> None:
        self.base_url = base_url
        self.credential = credential
        self.directory = Path(directory)
        self.context = context
        self.retry_delay_s = retry_delay_s

    def path_for(self, sha256: str) -> Path:
        return self.directory / f"{sha256}.profile"

    def prefetch(self, release: Release, cancel: threading.Event | None = None) -> None:
        """Fetch and keep the profile of ``release`` (best effort: failures are logged, never raised)."""
        sha256 = release.reference_profile_sha256
        if sha256 is None or self.files_for(release):
            return
        for attempt in range(1, FETCH_ATTEMPTS + 1):
            try:
                document = fetch_profile(self.base_url, self.credential, sha256, context=self.context)
            except ProfileFetchError as exc:
                log.warning("event=profile_fetch_failed sha256=%s attempt=%d error=%r", sha256[:12], attempt, str(exc))
                if (cancel or threading.Event()).wait(self.retry_delay_s * attempt):
                    return
                continue
            atomic_write_bytes(self.path_for(sha256), document)
            log.info("event=profile_fetched sha256=%s bytes=%d", sha256[:12], len(document))
            return
        log.warning("event=profile_missing release=%s version=%d detail='telemetry of this model will carry no "
                    "feature bins'", release.name, release.version)

    def files_for(self, release: Release) -> dict[str, bytes]:
        """``{PROFILE_FILE: bytes}`` to stage with the model, if the profile was fetched and still checks."""
        sha256 = release.reference_profile_sha256
        if sha256 is None:
            return {}
        try:
            document = self.path_for(sha256).read_bytes()
            check_profile(sha256, document)
        except (OSError, ProfileFetchError):
            return {}
        return {PROFILE_FILE: document}

    def discard(self, release: Release) -> None:
        if release.reference_profile_sha256 is not None:
            self.path_for(release.reference_profile_sha256).unlink(missing_ok=True)
