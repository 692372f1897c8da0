"""Root rotation: root N+1 needs a threshold of root N's root keys and of its own."""

from dataclasses import replace
from datetime import timedelta

import pytest

from agent.protocol.errors import (
    ExpiredError,
    MalformedDocumentError,
    RootRotationError,
    ThresholdNotMetError,
    UnknownSignerError,
    WrongRoleError,
)
from agent.protocol.keys import generate_private_key
from agent.protocol.verify import verify_release, verify_root_update
from tests.agent.protocol.factories import NOW, KeySet, make_release, make_root, sign


def rotated(old: KeySet, new_root_keys: int = 2) -> KeySet:
    """The same release and rollout keys, fresh root keys."""
    return KeySet([generate_private_key() for _ in range(new_root_keys)], old.release, old.rollout)


@pytest.fixture
def old_keys() -> KeySet:
    return KeySet.generate(root=3)


def test_rotation_signed_by_both_thresholds_is_accepted(old_keys: KeySet) -> None:
    trusted = make_root(old_keys, root_threshold=2)
    new_keys = rotated(old_keys)
    candidate = make_root(new_keys, version=2, root_threshold=2)
    document = sign(candidate, [*old_keys.root[:2], *new_keys.root]).to_dict()
    assert verify_root_update(trusted, document, NOW) == candidate


def test_after_rotation_the_new_root_verifies_releases(old_keys: KeySet) -> None:
    trusted = make_root(old_keys)
    new_keys = KeySet(old_keys.root, [generate_private_key()], old_keys.rollout)
    candidate = make_root(new_keys, version=2)
    new_root = verify_root_update(trusted, sign(candidate, old_keys.root).to_dict(), NOW)
    release_document = sign(make_release(), new_keys.release).to_dict()
    verify_release(new_root, release_document, NOW)
    with pytest.raises(UnknownSignerError):
        verify_release(trusted, release_document, NOW)


def test_rotation_signed_only_by_new_keys_is_refused(old_keys: KeySet) -> None:
    trusted = make_root(old_keys)
    new_keys = rotated(old_keys)
    document = sign(make_root(new_keys, version=2), new_keys.root).to_dict()
    with pytest.raises(UnknownSignerError):
        verify_root_update(trusted, document, NOW)


def test_rotation_below_the_old_threshold_is_refused(old_keys: KeySet) -> None:
    trusted = make_root(old_keys, root_threshold=2)
    new_keys = rotated(old_keys)
    document = sign(make_root(new_keys, version=2), [old_keys.root[0], *new_keys.root]).to_dict()
    with pytest.raises(ThresholdNotMetError):
        verify_root_update(trusted, document, NOW)


def test_rotation_signed_only_by_old_keys_is_refused(old_keys: KeySet) -> None:
    trusted = make_root(old_keys)
    new_keys = rotated(old_keys)
    document = sign(make_root(new_keys, version=2), old_keys.root).to_dict()
    with pytest.raises(UnknownSignerError):
        verify_root_update(trusted, document, NOW)


def test_rotation_below_its_own_threshold_is_refused(old_keys: KeySet) -> None:
    trusted = make_root(old_keys)
    new_keys = KeySet([old_keys.root[0], generate_private_key()], old_keys.release, old_keys.rollout)
    candidate = make_root(new_keys, version=2, root_threshold=2)
    document = sign(candidate, old_keys.root).to_dict()  # only one of the new root's keys signed
    with pytest.raises(ThresholdNotMetError):
        verify_root_update(trusted, document, NOW)


def test_rotation_signed_by_the_release_key_is_refused(old_keys: KeySet) -> None:
    trusted = make_root(old_keys)
    document = sign(make_root(old_keys, version=2), old_keys.release).to_dict()
    with pytest.raises(WrongRoleError):
        verify_root_update(trusted, document, NOW)


@pytest.mark.parametrize("version", [1, 3, 10])
def test_rotation_must_be_exactly_the_next_version(old_keys: KeySet, version: int) -> None:
    trusted = make_root(old_keys)
    document = sign(make_root(old_keys, version=version), old_keys.root).to_dict()
    with pytest.raises(RootRotationError):
        verify_root_update(trusted, document, NOW)


def test_rotation_to_an_expired_root_is_refused(old_keys: KeySet) -> None:
    trusted = make_root(old_keys)
    document = sign(make_root(old_keys, version=2, expires=NOW - timedelta(days=1)), old_keys.root).to_dict()
    with pytest.raises(ExpiredError):
        verify_root_update(trusted, document, NOW)


def test_an_expired_trusted_root_can_still_be_rotated(old_keys: KeySet) -> None:
    """A device whose root expired while offline recovers through the next signed root."""
    trusted = replace(make_root(old_keys), expires=NOW - timedelta(days=1))
    candidate = make_root(old_keys, version=2)
    assert verify_root_update(trusted, sign(candidate, old_keys.root).to_dict(), NOW) == candidate


def test_a_release_is_not_a_root(old_keys: KeySet) -> None:
    trusted = make_root(old_keys)
    document = sign(make_release(), old_keys.root).to_dict()
    with pytest.raises(MalformedDocumentError, match="expected a root document"):
        verify_root_update(trusted, document, NOW)
