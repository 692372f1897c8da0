"""A fleet the way the security docs tell an operator to run it: keys from
``edgefleet keys init``, Mosquitto started from ``edgefleet broker-config``
(TLS, client certificates from the fleet CA, CRL, per-device ACL), the server
on ``mqtts://`` with its own client certificate, devices enrolled with
single-use bootstrap tokens. Everything on 127.0.0.1.

``TlsClient`` is a raw MQTT client with any certificate, for playing a device,
an attacker or the read-only observer.
"""

from __future__ import annotations

import os
import queue
import secrets
import signal
import ssl
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt

from fleet_server.client import FleetClient
from fleet_server.keyring import init_keyring
from fleet_server.localfleet import LocalServer
from fleet_server.pki import CA_DIR, FleetCA, cert_pem, init_ca, key_pem, load_ca, new_private_key
from fleet_server.processes import ManagedProcess, free_port, wait_for_port, wait_until
from tests.fleet_server.security_helpers import make_csr
from tests.helpers.mosquitto import find_mosquitto

BIN_DIR = Path(sys.executable).parent
OBSERVER = "edgefleet.observer"


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    ca: Path


class TlsClient:
    """One MQTT 3.1.1 connection over TLS; ``connected`` tells whether the broker let it in."""

    __test__ = False

    def __init__(self, port: int, files: TlsFiles, client_id: str, clean_session: bool = True,
                 timeout: float = 5.0) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._connack = threading.Event()
        self.accepted = False
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=clean_session, protocol=mqtt.MQTTv311)
        self.client.tls_set(ca_certs=str(files.ca), certfile=str(files.cert) if files.cert else None,
                            keyfile=str(files.key) if files.key else None, cert_reqs=ssl.CERT_REQUIRED)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *_args: self._connack.set()  # refused during the TLS handshake
        self.client.on_message = lambda _c, _u, message: self.messages.put(message)
        try:
            self.client.connect("127.0.0.1", port, keepalive=30)
        except (OSError, ssl.SSLError):
            return
        self.client.loop_start()
        self._connack.wait(timeout)

    def _on_connect(self, _client: mqtt.Client, _userdata: object, _flags: object, reason: mqtt.ReasonCode,
                    _properties: object) -> None:
        self.accepted = not reason.is_failure
        self._connack.set()

    @property
    def connected(self) -> bool:
        return self.accepted and self.client.is_connected()

    def subscribe(self, *topics: str) -> None:
        for topic in topics:
            self.client.subscribe(topic, qos=1)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)

    def drain(self) -> list[mqtt.MQTTMessage]:
        received = []
        while True:
            try:
                received.append(self.messages.get_nowait())
            except queue.Empty:
                return received

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class SecureFleet:
    root: Path
    broker_port: int
    broker: ManagedProcess
    server: LocalServer
    clients: list[TlsClient] = field(default_factory=list)

    @property
    def key_dir(self) -> Path:
        return self.server.data_dir / "keys"

    @property
    def ca(self) -> FleetCA:
        return load_ca(self.key_dir / "ca")

    @property
    def mqtt_url(self) -> str:
        return f"mqtts://127.0.0.1:{self.broker_port}"

    def admin(self) -> FleetClient:
        return FleetClient(self.server.url, self.server.admin_token)

    def bootstrap_token(self, device_id: str | None = None) -> str:
        with self.admin() as client:
            return client.create_bootstrap_token(device_id, 600)["token"]

    def identity(self, common_name: str, lifetime: timedelta = timedelta(days=1), now: datetime | None = None,
                 ca: FleetCA | None = None) -> TlsFiles:
        """A client certificate issued directly by the CA (the test holds the CA key, like the operator)."""
        key = new_private_key()
        certificate = (ca or self.ca).issue_client(common_name, key.public_key(), lifetime, now)
        directory = self.root / "identities" / f"{common_name}-{secrets.token_hex(3)}"
        directory.mkdir(parents=True)
        (directory / "cert.pem").write_bytes(cert_pem(certificate))
        (directory / "key.pem").write_bytes(key_pem(key))
        return TlsFiles(directory / "cert.pem", directory / "key.pem", self.key_dir / "ca" / "ca.pem")

    def enroll(self, device_id: str) -> tuple[str, TlsFiles]:
        """Enroll over HTTP like an agent does (own key, CSR, single-use token); (credential, TLS files)."""
        key = new_private_key()
        csr, _ = make_csr(device_id, key)
        body = {"device_id": device_id, "bootstrap_token": self.bootstrap_token(device_id), "arch": "x86_64",
                "ram_mb": 1024, "runtimes": ["onnxruntime"], "agent_version": "test", "tags": [], "csr": csr}
        answer = httpx.post(f"{self.server.url}/api/v1/devices/enroll", json=body, timeout=30)
        assert answer.status_code == 201, answer.text
        directory = self.root / "identities" / device_id
        directory.mkdir(parents=True)
        (directory / "cert.pem").write_text(answer.json()["certificate"])
        (directory / "key.pem").write_bytes(key_pem(key))
        (directory / "ca.pem").write_text(answer.json()["ca_certificate"])
        return answer.json()["credential"], TlsFiles(directory / "cert.pem", directory / "key.pem",
                                                      directory / "ca.pem")

    def connect(self, files: TlsFiles, client_id: str, clean_session: bool = True) -> TlsClient:
        client = TlsClient(self.broker_port, files, client_id, clean_session)
        self.clients.append(client)
        return client

    def reload_broker(self) -> None:
        """SIGHUP: Mosquitto reloads its TLS files, including the CRL."""
        before = self.broker.log_text().count("Reloading config")
        self.broker.signal(signal.SIGHUP)
        wait_until(lambda: self.broker.log_text().count("Reloading config") > before, 10, "mosquitto reload")

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        self.server.stop()
        self.broker.stop()


def edgefleet(*args: str) -> str:
    result = subprocess.run([str(BIN_DIR / "edgefleet"), *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"edgefleet {' '.join(args)}: {result.stderr or result.stdout}"
    return result.stdout


def start_secure_fleet(root: Path, **server_env: str) -> SecureFleet:
    data_dir = root / "server"
    init_keyring(data_dir / "keys")  # what 'edgefleet keys init' does (tests/fleet_server/test_cli_keys.py)
    init_ca(data_dir / "keys" / CA_DIR)
    port = free_port()
    broker_dir = root / "broker"
    options = ["--key-dir", str(data_dir / "keys"), "--hostname", "127.0.0.1", "--port", str(port),
               "--bind", "127.0.0.1", "--observer", OBSERVER]
    if os.geteuid() == 0:
        options += ["--user", "root"]  # otherwise mosquitto drops to 'mosquitto', which cannot read the keys here
    edgefleet("broker-config", str(broker_dir), *options)
    with open(broker_dir / "mosquitto.conf", "a") as config:
        config.write("log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n")
    broker = ManagedProcess(f"mosquitto-tls:{port}", [find_mosquitto(), "-c", broker_dir / "mosquitto.conf"],
                            root / "mosquitto.log")
    broker.start()
    server = LocalServer(data_dir, bootstrap_token="", admin_token=secrets.token_urlsafe(24),
                         mqtt_url=f"mqtts://127.0.0.1:{port}", extra_env=server_env)
    try:
        wait_for_port(port, "127.0.0.1", 15, broker)
        server.start()
    except BaseException:
        server.stop()
        broker.stop()
        raise
    return SecureFleet(root, port, broker, server)


def now() -> datetime:
    return datetime.now(UTC)
