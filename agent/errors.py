"""Errors raised by the device agent (protocol errors live in ``agent.protocol.errors``)."""

from agent.protocol.errors import EdgeFleetError


class AgentError(EdgeFleetError):
    """Base class of the agent's own errors."""


class ConfigError(AgentError):
    """The agent configuration (file, environment or flags) is invalid."""


class NotEnrolledError(AgentError):
    """The data directory holds no enrollment yet."""


class EnrollmentError(AgentError):
    """Enrollment with the fleet server failed."""


class ServerUnreachableError(EnrollmentError):
    """The fleet server could not be reached."""


class StateFileError(AgentError):
    """A persisted agent file (state, slot, enrollment) is unreadable or inconsistent."""


class InvalidTransitionError(AgentError):
    """The deployment state machine has no transition for this (state, event) pair."""


class DownloadError(AgentError):
    """Fetching an artifact failed."""


class DownloadStalledError(DownloadError):
    """No bytes arrived within the stall timeout."""


class DownloadExpiredError(DownloadError):
    """The directive expired before the download completed."""


class DeploymentCancelledError(AgentError):
    """A newer directive (or shutdown) cancelled the running deployment."""


class SlotError(AgentError):
    """A model slot is missing or cannot be switched."""


class RuntimeUnavailableError(AgentError):
    """The artifact's runtime is unknown or not installed on this device."""


class ModelLoadError(AgentError):
    """A runtime could not load a model file."""


class HealthCheckError(AgentError):
    """A freshly installed model failed its post-install health check."""


class InferenceError(AgentError):
    """An inference request could not be served."""


class InvalidInferenceRequestError(InferenceError):
    """The request's tensors do not match the model (names, datatype, shape, data)."""


class ModelNotReadyError(InferenceError):
    """No model is loaded, or the named model/version is not the one served."""


class ShadowError(AgentError):
    """A shadow candidate cannot be installed next to the served model, or its answers not compared."""


class TelemetryError(AgentError):
    """Telemetry could not be recorded, stored or sent."""


class TelemetryQueueError(TelemetryError):
    """The on-device telemetry queue (sqlite) cannot be opened, written or read."""


class ProfileFetchError(TelemetryError):
    """A release's reference profile could not be fetched or does not match its signed hash."""


class SelfUpdateError(AgentError):
    """The agent cannot install, switch to or confirm a new version of itself."""


class InvalidBundleError(SelfUpdateError):
    """A file is not an EdgeFleet agent wheel (the bundle of an agent release)."""
