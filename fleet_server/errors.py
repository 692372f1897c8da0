"""The fleet server's errors. Every one is an ``EdgeFleetError``, so the CLI reports it in one line.

Each may carry a ``hint``: what the operator can do about it (the CLI prints it below the error).
Subclasses set a default ``hint``; a raise site can pass a more specific one.
"""

from agent.protocol.errors import EdgeFleetError


class FleetServerError(EdgeFleetError):
    """Base class of the fleet server's errors."""

    hint: str = ""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class KeyringError(FleetServerError):
    """A keyring directory cannot be written, read or does not hold a consistent key set."""

    hint = "check the path and its permissions; a keyring is created with 'edgefleet keys init DIR'"


class KeyringExistsError(KeyringError):
    """``keys init`` was pointed at a directory that already holds files."""

    hint = "choose a new or empty directory: existing keys are never overwritten"


# -- API and service errors (mapped to HTTP statuses in fleet_server/api/errors.py) --


class NotFoundError(FleetServerError):
    """A requested resource does not exist (404)."""


class ModelNotFoundError(NotFoundError):
    """No model of that name is registered."""


class ModelVersionNotFoundError(NotFoundError):
    """The model has no such version."""


class ReleaseNotFoundError(NotFoundError):
    """No signed release of that name and version."""


class DeviceNotFoundError(NotFoundError):
    """No enrolled device has that id."""


class DeploymentNotFoundError(NotFoundError):
    """No deployment has that id."""


class ArtifactNotFoundError(NotFoundError):
    """No stored artifact has that sha256."""


class ConflictError(FleetServerError):
    """The request conflicts with the current state (409)."""


class ReleaseExistsError(ConflictError):
    """That model version is already released."""


class ReleaseKeyOfflineError(ConflictError):
    """The release key is kept offline, so the server cannot sign releases."""


class VersionAllocationError(ConflictError):
    """Concurrent uploads kept taking the next version number."""


class InvalidRequestError(FleetServerError):
    """The request is well-formed HTTP but its content is unacceptable (422)."""


class InvalidUploadError(InvalidRequestError):
    """A model upload form is malformed or misses fields."""


class InvalidModelFileError(InvalidRequestError):
    """The uploaded file is not a loadable ONNX or TFLite model."""


class NoTargetsError(InvalidRequestError):
    """A deployment selects no device."""


class UploadTooLargeError(FleetServerError):
    """The upload exceeds the size cap (413)."""


class RangeNotSatisfiableError(FleetServerError):
    """A Range header asks for bytes outside the artifact (416)."""

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size


class AuthenticationError(FleetServerError):
    """Missing or unknown credentials (401)."""


class PermissionDeniedError(FleetServerError):
    """Valid credentials that may not do this (403)."""


class MqttError(FleetServerError):
    """The MQTT side of the server cannot be set up."""


class BrokerUrlError(MqttError):
    """The configured MQTT URL cannot be used."""


class EmbeddedBrokerError(MqttError):
    """The embedded amqtt broker failed to start."""


class ConfigurationError(FleetServerError):
    """A server setting (``EDGEFLEET_*``) has an unusable value."""


class DatabaseUnavailableError(FleetServerError):
    """The database cannot be opened or migrated."""


# -- security (issue 7) --


class CertificateRequestError(InvalidRequestError):
    """A device's certificate signing request is malformed, badly signed or names another device."""


class DeviceRevokedError(ConflictError):
    """The device was revoked; it can neither authenticate nor re-enroll."""


class TokenNotFoundError(NotFoundError):
    """No API or bootstrap token has that id."""


class RootNotFoundError(NotFoundError):
    """The server holds no root metadata of that version."""


class SignedReleaseError(InvalidRequestError):
    """A release signed elsewhere does not verify or does not match the registered model version."""


class RootRotationFailedError(KeyringError):
    """A new root cannot be produced or is not a valid successor of the trusted one."""


# -- compression (fleet_server/services/compression_*.py) --


class CompressionJobNotFoundError(NotFoundError):
    """No compression job has that id."""


class DatasetNotFoundError(NotFoundError):
    """No uploaded calibration or validation data set has that sha256."""

    hint = "upload the data set first (POST /api/v1/datasets, or 'edgefleet model compress --calibration FILE')"


class CompressionInProgressError(ConflictError):
    """A compression job of this model version is still queued or running."""

    hint = "wait for the job to finish ('edgefleet model jobs NAME@VERSION' shows it)"


class InvalidCompressionRequestError(InvalidRequestError):
    """The compression options or data sets are unacceptable."""


class InvalidCalibrationError(InvalidRequestError):
    """Calibration data uploaded with a model does not fit it (format, inputs), or the model cannot run on it."""

    hint = "send .npz (one array per input, named after it), .npy (the single input) or numeric CSV"


class RolloutNotFoundError(NotFoundError):
    """No rollout has that id."""


class RolloutStateError(ConflictError):
    """The rollout's state does not allow the operation (e.g. resume a rollout that is not paused)."""

    hint = "'edgefleet rollout show ID' shows its state and what it allows"


class AlertNotFoundError(NotFoundError):
    """No alert has that id."""
