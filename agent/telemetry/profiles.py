"""Reference profiles on the device: fetched with the model, checked against the signed hash,
kept in the model's slot as ``reference_profile.json``.

The release names the profile by the sha256 of its canonical bytes; the
profile is a content-addressed artifact on the server. Fetching is best
effort: without a profile the model is installed all the same and its
telemetry simply carries no feature bins.
"""

import hashlib
import logging
import urllib.error
import urllib.request
from pathlib import Path

from agent.errors import ProfileFetchError
from agent.inference import ServedModel
from agent.protocol.errors import ProtocolError
from agent.protocol.profile import MAX_PROFILE_BYTES, ReferenceProfile
from agent.slots import CURRENT, PREVIOUS, SlotStore

log = logging.getLogger(__name__)

PROFILE_FILE = "reference_profile.json"
FETCH_TIMEOUT_S = 30.0
PROFILE_SLOTS = (CURRENT, PREVIOUS, "shadow")


def check_profile(sha256: str, document: bytes) -> ReferenceProfile:
    """The profile in ``document`` if its bytes hash to ``sha256`` and parse; else ``ProfileFetchError``."""
    actual = hashlib.sha256(document).hexdigest()
    if actual != sha256:
        raise ProfileFetchError(f"reference profile has sha256 {actual[:12]}, the release says {sha256[:12]}")
    try:
        return ReferenceProfile.from_bytes(document)
    except ProtocolError as exc:
        raise ProfileFetchError(f"reference profile {sha256[:12]} is malformed: {exc}") from None


def fetch_profile(base_url: str, credential: str, sha256: str, timeout_s: float = FETCH_TIMEOUT_S) -> bytes:
    """GET ``/api/v1/artifacts/{sha256}`` (capped at ``MAX_PROFILE_BYTES``) and check it."""
    request = urllib.request.Request(f"{base_url.rstrip('/')}/api/v1/artifacts/{sha256}",
                                     headers={"Authorization": f"Bearer {credential}", "Accept-Encoding": "identity"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
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
