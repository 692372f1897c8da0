"""The states of a rollout, its phases and its devices."""

import enum


class RolloutState(enum.StrEnum):
    DRAFT = "draft"  # created, not started
    RUNNING = "running"
    PAUSED = "paused"  # no new notifications, no phase change; results and abort criteria still apply
    SUCCEEDED = "succeeded"
    ABORTED = "aborted"  # stopped; devices that took the release keep it (until a rollback)
    ROLLING_BACK = "rolling_back"  # rollback directives are out to every device that took the release
    ROLLED_BACK = "rolled_back"


class PhaseState(enum.StrEnum):
    PENDING = "pending"
    ACTIVE = "active"  # its devices are being notified
    BAKING = "baking"  # enough devices succeeded; health is watched for the bake time
    COMPLETED = "completed"


class DeviceStatus(enum.StrEnum):
    PENDING = "pending"  # not notified yet (a later phase, the rate limit, or a retry's backoff)
    NOTIFIED = "notified"  # a directive is out; no final report yet (offline devices stay here)
    SUCCEEDED = "succeeded"  # installed and passed its health check
    FAILED = "failed"  # reported failed, rolled back by itself, or rejected the directive
    TIMED_OUT = "timed_out"  # no final report after every retry
    INCOMPATIBLE = "incompatible"  # no variant of the release fits the device: never notified
    SKIPPED = "skipped"  # never notified: the rollout ended first
    ROLLING_BACK = "rolling_back"  # a rollback (or shadow drop) directive is out
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"


FINAL_DEVICE_STATUSES = frozenset({DeviceStatus.SUCCEEDED, DeviceStatus.FAILED, DeviceStatus.TIMED_OUT,
                                   DeviceStatus.INCOMPATIBLE, DeviceStatus.SKIPPED, DeviceStatus.ROLLED_BACK,
                                   DeviceStatus.ROLLBACK_FAILED})
ACTIVE_ROLLOUT_STATES = frozenset({RolloutState.RUNNING, RolloutState.PAUSED, RolloutState.ROLLING_BACK})
