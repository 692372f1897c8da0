"""Every exception EdgeFleet raises, in one hierarchy.

The agent, the server and the compression package all raise subclasses of
``EdgeFleetError``; protocol violations are ``ProtocolError``s and each rule of
the verification has its own class so callers (and tests) can tell them apart.
"""


class EdgeFleetError(Exception):
    """Base class of every EdgeFleet error."""


class ProtocolError(EdgeFleetError):
    """A document or message does not follow the EdgeFleet protocol."""


# -- parsing -----------------------------------------------------------------


class MalformedDocumentError(ProtocolError):
    """Not canonical JSON, wrong types, missing or unknown fields, bad values."""


class DocumentTooLargeError(MalformedDocumentError):
    """The document exceeds the size cap for its kind."""


class DuplicateKeyError(MalformedDocumentError):
    """A JSON object names the same key twice."""


class UnsafePathError(MalformedDocumentError):
    """An artifact path is absolute, climbs out with ``..`` or is otherwise unsafe."""


class InvalidDeviceIdError(MalformedDocumentError):
    """A device id does not match ``[a-z0-9][a-z0-9-]{0,62}``."""


class InvalidTopicError(MalformedDocumentError):
    """An MQTT topic is not one of EdgeFleet's."""


# -- keys and signatures -----------------------------------------------------


class KeyFormatError(ProtocolError):
    """A key cannot be loaded, parsed or is of the wrong type."""


class VerificationError(ProtocolError):
    """A signed document failed verification."""


class UnknownSignerError(VerificationError):
    """No signature comes from a key the trusted root knows."""


class WrongRoleError(VerificationError):
    """The document is signed only by keys of another role."""


class ThresholdNotMetError(VerificationError):
    """Fewer distinct trusted keys signed than the role's threshold."""


class BadSignatureError(VerificationError):
    """A signature does not match the signed bytes (the document was altered)."""


class ExpiredError(VerificationError):
    """The metadata expired before the verification time."""


class WrongDeviceError(VerificationError):
    """A directive addressed to another device."""


class ReplayError(VerificationError):
    """A directive whose sequence number is not above the last accepted one."""


class ReleaseMismatchError(VerificationError):
    """The release does not match the directive's reference (name, version, sha256)."""


class NoCompatibleVariantError(VerificationError):
    """No artifact variant of the release fits the device."""


class RootRotationError(VerificationError):
    """A new root is not a valid successor of the trusted one."""


class ArtifactMismatchError(VerificationError):
    """Downloaded artifact bytes do not match the signed length or sha256."""


class DowngradeError(VerificationError):
    """An install directive for an older version of the installed model (only a rollback may go back)."""
