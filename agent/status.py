"""``edgefleet-agent status``: what the data directory says, as one JSON document.

Read only: works whether or not the agent is running.
"""

from pathlib import Path
from typing import Any

from agent.enroll import load_enrollment
from agent.errors import NotEnrolledError
from agent.slots import CURRENT, PREVIOUS, SlotInfo, SlotStore
from agent.state_store import StateStore


def _slot(info: SlotInfo | None) -> dict[str, Any] | None:
    if info is None:
        return None
    return {"name": info.release_name, "version": info.release_version, "variant": info.variant,
            "runtime": info.runtime, "sha256": info.sha256, "sequence": info.sequence}


def status_report(data_dir: Path) -> dict[str, Any]:
    data_dir = Path(data_dir)
    try:
        enrollment = load_enrollment(data_dir)
    except NotEnrolledError:
        enrollment = None
    record = StateStore(data_dir).load()
    slots_dir = data_dir / "slots"
    slots = SlotStore(slots_dir) if slots_dir.is_dir() else None
    port_file = data_dir / "inference_port"
    try:
        inference_port: int | None = int(port_file.read_text().strip())
    except (OSError, ValueError):
        inference_port = None
    return {
        "data_dir": str(data_dir),
        "enrolled": enrollment is not None,
        "device_id": enrollment.device_id if enrollment else None,
        "server_url": enrollment.server_url if enrollment else None,
        "state": record.state.value,
        "sequence": record.sequence,
        "last_accepted_sequence": record.last_accepted_sequence,
        "action": record.action,
        "release": ({"name": record.release_name, "version": record.release_version}
                    if record.release_name else None),
        "variant": record.variant,
        "reason": record.reason,
        "updated_at": record.updated_at or None,
        "current": _slot(slots.read(CURRENT)) if slots else None,
        "previous": _slot(slots.read(PREVIOUS)) if slots else None,
        "inference_port": inference_port,
    }

