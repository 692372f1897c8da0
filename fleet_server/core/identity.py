"""This server's stable identity: a random id kept in ``<data dir>/server_id``.

It names the server's MQTT client (so the broker keeps its persistent session
across restarts) and the holder of the rollout controller lease (so a
restarted server takes its own lease back at once). Replicas have their own
data directories, hence their own ids.
"""

import logging
import re
import secrets
from pathlib import Path

from agent.storage import atomic_write_bytes

logger = logging.getLogger(__name__)

SERVER_ID_FILE = "server_id"
SERVER_ID = re.compile(r"[a-z0-9-]{1,40}")


def server_identity(data_dir: Path) -> str:
    """The stored id, created on first use."""
    path = Path(data_dir) / SERVER_ID_FILE
    try:
        stored = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        stored = ""
    if SERVER_ID.fullmatch(stored):
        return stored
    value = secrets.token_hex(8)
    atomic_write_bytes(path, value.encode("utf-8") + b"\n")
    logger.info("server event=server_id_created id=%s path=%s", value, path)
    return value
