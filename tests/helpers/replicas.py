"""Several fleet server replicas as real processes on one database and one broker.

What the replicas share is exactly what docs/deployment.md tells operators to share: the
database URL, the key directory and the artifact store (one file system here, a shared
volume in production), and the operator/bootstrap tokens and the dashboard session secret
(the same environment on every replica). Each replica has its own data directory and port.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from fleet_server.localfleet import LocalServer


@dataclass
class ReplicaSet:
    root: Path
    database_url: str
    mqtt_url: str
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    bootstrap_token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    session_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    extra_env: dict[str, str] = field(default_factory=dict)
    servers: list[LocalServer] = field(default_factory=list)

    @property
    def shared_env(self) -> dict[str, str]:
        return {
            "EDGEFLEET_DATABASE_URL": self.database_url,
            "EDGEFLEET_KEY_DIR": str(self.root / "keys"),
            "EDGEFLEET_ARTIFACT_DIR": str(self.root / "artifacts"),
            "EDGEFLEET_SESSION_SECRET": self.session_secret,
            "EDGEFLEET_MQTT_SHARED_SUBSCRIPTION": "true",  # replicas share the device messages
            **self.extra_env,
        }

    def add(self, **extra_env: str) -> LocalServer:
        """Start one more replica (the first one creates the key directory, so start them in turn)."""
        number = len(self.servers) + 1
        server = LocalServer(self.root / f"replica-{number}", self.bootstrap_token, self.admin_token,
                             mqtt_url=self.mqtt_url, extra_env={**self.shared_env, **extra_env})
        self.servers.append(server)
        server.start()
        return server

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()


def start_replicas(root: Path, count: int, database_url: str, mqtt_url: str, **extra_env: str) -> ReplicaSet:
    replicas = ReplicaSet(Path(root), database_url, mqtt_url, extra_env=dict(extra_env))
    try:
        for _ in range(count):
            replicas.add()
    except BaseException:
        replicas.stop()
        raise
    return replicas
