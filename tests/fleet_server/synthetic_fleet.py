"""Insert many synthetic devices straight into the database (dashboard and list scale tests, benchmarks).

SQLAlchemy Core: one multi-row insert per table, no server needed.
"""

import hashlib
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, insert

SITES = 5


def synthetic_device(index: int, now: datetime) -> dict:
    version = 2 if index % 4 else 1  # three quarters on v2
    state = "failed" if index % 50 == 7 else "succeeded"
    return {
        "device_id": f"pi-{index:05d}",
        "arch": "aarch64" if index % 3 else "armv7l",
        "ram_mb": 1024 if index % 2 else 4096,
        "runtimes": ["onnxruntime", "tflite"],
        "agent_version": "0.1.0",
        "credential_hash": hashlib.sha256(f"synthetic-{index}".encode()).hexdigest(),
        "enrolled_at": now - timedelta(days=30),
        "credential_rotated_at": now - timedelta(days=30),
        "directive_sequence": version,
        "online": index % 10 != 0,  # one in ten offline
        "last_seen": now - timedelta(seconds=index % 600),
        "presence_timestamp": None,
        "uptime_s": 3600.0 + index,
        "installed_models": [{"name": "digits", "version": version, "variant": "onnx-fp32", "sha256": "0" * 64}],
        "deployment_state": state,
        "deployment_state_at": now - timedelta(minutes=5),
    }


def insert_devices(engine: Engine, count: int, start: int = 0) -> list[str]:
    """``count`` devices ``pi-00000``... tagged ``site-N`` (N = index % 5) and ``synthetic``; returns their ids."""
    from fleet_server.models.device import Device, DeviceTag

    now = datetime.now(UTC)
    rows = [synthetic_device(index, now) for index in range(start, start + count)]
    tags = [{"device_id": row["device_id"], "tag": tag}
            for index, row in enumerate(rows, start) for tag in (f"site-{index % SITES}", "synthetic")]
    with engine.begin() as connection:
        connection.execute(insert(Device), rows)
        connection.execute(insert(DeviceTag), tags)
    return [row["device_id"] for row in rows]
