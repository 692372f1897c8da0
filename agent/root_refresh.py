"""Keep the trusted root current: before verifying a directive the agent asks
the server for root N+1, N+2, ... (``GET /api/v1/root/{version}``) and accepts
each one only per the protocol (``verify_root_update``: a threshold of the old
root's keys and of the new one's signed it). Accepted roots replace
``root.json`` atomically, so a rotation that drops a compromised key protects
the device before it looks at the next directive.

A server that cannot be reached, or a candidate that does not verify, leaves
the trusted root as it is (and is logged): the device never trusts less.
"""

import json
import logging
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.enroll import ROOT_FILE
from agent.protocol.canonical import parse_json
from agent.protocol.errors import ProtocolError
from agent.protocol.metadata import Root
from agent.protocol.verify import verify_root_update
from agent.storage import atomic_write_json

log = logging.getLogger(__name__)

ROOT_PATH = "/api/v1/root/{version}"
MAX_STEPS = 32
MAX_ROOT_BYTES = 256 * 1024


class RootRefresher:
    def __init__(self, data_dir: Path, server_url: str, now: Callable[[], datetime],
                 ssl_context: ssl.SSLContext | None = None, timeout_s: float = 5.0) -> None:
        self.data_dir = Path(data_dir)
        self.server_url = server_url.rstrip("/")
        self.now = now
        self.ssl_context = ssl_context
        self.timeout_s = timeout_s

    def fetch(self, version: int) -> Any | None:
        """Root ``version`` from the server; None if it has none (404) or cannot be asked."""
        url = self.server_url + ROOT_PATH.format(version=version)
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s, context=self.ssl_context) as response:
                return parse_json(response.read(MAX_ROOT_BYTES + 1), MAX_ROOT_BYTES)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code != 404:
                log.warning("event=root_fetch_failed version=%d status=%d", version, exc.code)
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            log.warning("event=root_fetch_failed version=%d error=%r", version, str(exc))
        except ProtocolError as exc:
            log.error("event=root_rejected version=%d error=%r", version, str(exc))
        return None

    def refresh(self, trusted: Root) -> Root:
        """Walk forward from ``trusted`` as far as valid successors go; return the newest trusted root."""
        root = trusted
        for _ in range(MAX_STEPS):
            document = self.fetch(root.version + 1)
            if document is None:
                break
            try:
                candidate = verify_root_update(root, document, self.now())
            except ProtocolError as exc:
                log.error("event=root_rejected version=%d error=%r", root.version + 1,
                          f"{type(exc).__name__}: {exc}")
                break
            atomic_write_json(self.data_dir / ROOT_FILE, document)
            log.warning("event=root_rotated from=%d to=%d keys=%s", root.version, candidate.version,
                        json.dumps(sorted(key[:12] for key in candidate.keys)))
            root = candidate
        return root
