"""The process helpers live in ``fleet_server.processes`` (the demo uses them too)."""

from fleet_server.processes import (  # noqa: F401
    LOOPBACK,
    ManagedProcess,
    ProcessFailedError,
    WaitTimeoutError,
    free_port,
    port_accepts,
    wait_for_port,
    wait_until,
)
