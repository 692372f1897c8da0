"""The update rules. Pure: documents, the trusted state and the time in, a
verdict out. Every rejection raises its own ``VerificationError`` subclass.

A device calls ``verify_update`` with its trusted root, its identity and the
last directive sequence it accepted; it gets back the artifact variant to
fetch. ``verify_artifact`` checks the bytes once fetched; ``verify_root_update``
decides whether a new root may replace the trusted one.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent.protocol.envelope import Envelope, check_signatures, require_type
from agent.protocol.errors import (
    ArtifactMismatchError,
    DowngradeError,
    ExpiredError,
    NoCompatibleVariantError,
    ReleaseMismatchError,
    ReplayError,
    RootRotationError,
    WrongDeviceError,
)
from agent.protocol.metadata import Action, ArtifactVariant, Directive, Release, Role, Root

ARTIFACT_ACTIONS = frozenset({Action.INSTALL, Action.SHADOW})  # the actions that fetch an artifact variant


@dataclass(frozen=True)
class DeviceFacts:
    device_id: str
    arch: str
    ram_mb: int
    runtimes: tuple[str, ...]


@dataclass(frozen=True)
class VerifiedUpdate:
    directive: Directive
    release: Release
    variant: ArtifactVariant | None  # None for a rollback or a shadow drop


def _check_expiry(expires: datetime, now: datetime, what: str) -> None:
    if now >= expires:
        raise ExpiredError(f"{what} expired at {expires.isoformat()}")


def load_trusted_root(document: Any, now: datetime) -> Root:
    """Parse the root provisioned on the device; it must be self-consistent."""
    envelope = Envelope.from_dict(document, "root")
    require_type(envelope, "root")
    root = Root.from_dict(envelope.signed)
    check_signatures(envelope, root, Role.ROOT)
    _check_expiry(root.expires, now, "root")
    return root


def verify_root_update(trusted: Root, document: Any, now: datetime) -> Root:
    """Root N+1 is trusted only if a threshold of root N's keys and of its own signed it."""
    envelope = Envelope.from_dict(document, "root")
    require_type(envelope, "root")
    candidate = Root.from_dict(envelope.signed)
    if candidate.version != trusted.version + 1:
        raise RootRotationError(f"root version {candidate.version} does not follow {trusted.version}")
    check_signatures(envelope, trusted, Role.ROOT)
    check_signatures(envelope, candidate, Role.ROOT)
    _check_expiry(candidate.expires, now, "root")
    return candidate


def variant_fits(variant: ArtifactVariant, device: DeviceFacts) -> bool:
    compat = variant.compatibility
    return (
        variant.runtime.value in device.runtimes
        and (not compat.arch or device.arch in compat.arch)
        and device.ram_mb >= compat.min_ram_mb
    )


def choose_variant(release: Release, device: DeviceFacts) -> ArtifactVariant:
    """The first variant (the release lists them in preference order) that fits."""
    for variant in release.variants:
        if variant_fits(variant, device):
            return variant
    raise NoCompatibleVariantError(
        f"no variant of {release.name} v{release.version} fits {device.arch}, "
        f"{device.ram_mb} MB, runtimes {list(device.runtimes)}"
    )


def verify_release(root: Root, document: Any, now: datetime) -> tuple[Release, str]:
    """Check a signed release; return it and the sha256 of its envelope."""
    envelope = Envelope.from_dict(document, "release")
    require_type(envelope, "release")
    release = Release.from_dict(envelope.signed)
    check_signatures(envelope, root, Role.RELEASE)
    _check_expiry(release.expires, now, "release")
    return release, envelope.sha256()


def verify_directive(root: Root, document: Any, device_id: str, last_sequence: int, now: datetime) -> Directive:
    envelope = Envelope.from_dict(document, "directive")
    require_type(envelope, "directive")
    directive = Directive.from_dict(envelope.signed)
    check_signatures(envelope, root, Role.ROLLOUT)
    if directive.device_id != device_id:
        raise WrongDeviceError(f"directive is for {directive.device_id}, this is {device_id}")
    if directive.sequence <= last_sequence:
        raise ReplayError(f"directive sequence {directive.sequence} is not above {last_sequence}")
    _check_expiry(directive.expires, now, "directive")
    return directive


def verify_update(
    root: Root,
    directive_document: Any,
    release_document: Any,
    device: DeviceFacts,
    last_sequence: int,
    now: datetime,
) -> VerifiedUpdate:
    """The one entry point: verify a directive and its release for this device."""
    directive = verify_directive(root, directive_document, device.device_id, last_sequence, now)
    release, release_sha256 = verify_release(root, release_document, now)
    ref = directive.release
    if (ref.name, ref.version, ref.sha256) != (release.name, release.version, release_sha256):
        raise ReleaseMismatchError(
            f"directive references {ref.name} v{ref.version} ({ref.sha256[:12]}), "
            f"release is {release.name} v{release.version} ({release_sha256[:12]})"
        )
    variant = choose_variant(release, device) if directive.action in ARTIFACT_ACTIONS else None
    return VerifiedUpdate(directive, release, variant)


def verify_artifact(variant: ArtifactVariant, length: int, sha256: str) -> None:
    """Raise unless the fetched bytes have the signed length and hash."""
    if length != variant.length:
        raise ArtifactMismatchError(f"artifact is {length} bytes, release says {variant.length}")
    if sha256 != variant.sha256:
        raise ArtifactMismatchError(f"artifact sha256 {sha256[:12]} does not match {variant.sha256[:12]}")


def check_not_downgrade(directive: Directive, release: Release, installed: tuple[str, int] | None) -> None:
    """An install may not replace the installed model by an older version of it; a signed rollback may."""
    if directive.action is not Action.INSTALL or installed is None:
        return
    name, version = installed
    if release.name == name and release.version < version:
        raise DowngradeError(f"{release.name} v{release.version} is older than the installed v{version}; "
                             "only a rollback directive may go back")
