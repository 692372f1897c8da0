"""The device's clock for expiry decisions (directives, releases, the trusted root).

Devices without a real-time clock can boot with a wrong time; ``clock_offset_s`` in the
agent's configuration (``EDGEFLEET_AGENT_CLOCK_OFFSET_S``) adds a fixed offset to the system
clock so tests can run an agent whose clock is skewed and check that expiry is judged by the
device's time, as the protocol says (``agent.protocol.verify``). Zero by default.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


@dataclass(frozen=True)
class DeviceClock:
    offset_s: float = 0.0

    def now(self) -> datetime:
        """The device's idea of the current UTC time."""
        return datetime.now(UTC) + timedelta(seconds=self.offset_s)
