"""Enrollment with the fleet server, and the files it leaves in the data directory.

``POST {server}/api/v1/devices/enroll`` with the bootstrap token and this
device's facts returns a device credential, the MQTT URL and the signed root.
The root is written to ``root.json`` (unless one is already provisioned there:
then the server's root must be the same or its valid successor) and the rest
to ``enrollment.json`` (mode 0600: it holds the credential), in that order, so
an ``enrollment.json`` always comes with its trusted root.
"""

import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent import identity
from agent.errors import EnrollmentError, NotEnrolledError, ServerUnreachableError, StateFileError
from agent.protocol.canonical import canonical_sha256
from agent.protocol.envelope import Envelope
from agent.protocol.errors import ExpiredError, ProtocolError
from agent.protocol.metadata import Root
from agent.protocol.verify import DeviceFacts, load_trusted_root, verify_root_update
from agent.storage import atomic_write_json

log = logging.getLogger(__name__)

ENROLLMENT_FILE = "enrollment.json"
ROOT_FILE = "root.json"
ENROLL_PATH = "/api/v1/devices/enroll"


@dataclass(frozen=True)
class Enrollment:
    device_id: str
    credential: str
    mqtt_url: str
    server_url: str
    artifact_base_url: str | None = None
    enrolled_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, document: Any) -> "Enrollment":
        try:
            enrollment = cls(**document)
        except TypeError as exc:
            raise StateFileError(f"{ENROLLMENT_FILE} is inconsistent: {exc}") from None
        for name in ("device_id", "credential", "mqtt_url", "server_url"):
            if not isinstance(getattr(enrollment, name), str) or not getattr(enrollment, name):
                raise StateFileError(f"{ENROLLMENT_FILE} field {name} must be a non-empty string")
        return enrollment


def load_enrollment(data_dir: Path) -> Enrollment:
    path = Path(data_dir) / ENROLLMENT_FILE
    try:
        document = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise NotEnrolledError(f"{data_dir} holds no enrollment") from None
    except (OSError, ValueError) as exc:
        raise StateFileError(f"cannot read {path}: {exc}") from None
    return Enrollment.from_dict(document)


def read_root_document(data_dir: Path) -> dict[str, Any] | None:
    path = Path(data_dir) / ROOT_FILE
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StateFileError(f"cannot read {path}: {exc}") from None


def load_root(data_dir: Path, now: datetime | None = None, allow_expired: bool = False) -> Root:
    """The trusted root from ``root.json``, verified against itself.

    ``allow_expired`` lets a device whose root expired keep running (and serving its model);
    the updater then rejects every directive until a new root is provisioned.
    """
    document = read_root_document(data_dir)
    if document is None:
        raise NotEnrolledError(f"{data_dir} holds no trusted root ({ROOT_FILE})")
    try:
        try:
            return load_trusted_root(document, now or datetime.now(UTC))
        except ExpiredError:
            if not allow_expired:
                raise
            expires = Root.from_dict(Envelope.from_dict(document, "root").signed).expires
            log.error("event=root_expired expires=%s detail='directives are rejected until a new root is provisioned'",
                      expires.isoformat())
            return load_trusted_root(document, expires - timedelta(seconds=1))
    except ProtocolError as exc:
        raise StateFileError(f"{ROOT_FILE} is not a valid root: {type(exc).__name__}: {exc}") from None


def _server_detail(error: urllib.error.HTTPError) -> str:
    try:
        document = json.loads(error.read(64 * 1024))
    except (OSError, ValueError):
        return ""
    detail = document.get("detail", document.get("error", "")) if isinstance(document, dict) else document
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                location = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
                parts.append(f"{location}: {item.get('msg', '')}" if location else str(item.get("msg", "")))
        detail = "; ".join(parts)
    return str(detail)[:500]


def _post_json(url: str, payload: dict[str, Any], timeout: float) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read(1024 * 1024))
    except urllib.error.HTTPError as exc:
        detail = _server_detail(exc)
        exc.close()
        if exc.code == 401:
            raise EnrollmentError("the server rejected the bootstrap token (HTTP 401)") from None
        suffix = f": {detail}" if detail else ""
        raise EnrollmentError(f"the server refused the enrollment (HTTP {exc.code}){suffix}") from None
    except urllib.error.URLError as exc:
        raise ServerUnreachableError(f"cannot reach the server at {url}: {exc.reason}") from None
    except (TimeoutError, ConnectionError) as exc:
        raise ServerUnreachableError(f"cannot reach the server at {url}: {exc}") from None
    except ValueError as exc:
        raise EnrollmentError(f"the server's enrollment answer is not JSON: {exc}") from None


def _check_root(data_dir: Path, document: Any, now: datetime) -> None:
    try:
        offered = load_trusted_root(document, now)
    except ProtocolError as exc:
        raise EnrollmentError(f"the server's root is invalid: {type(exc).__name__}: {exc}") from None
    existing = read_root_document(data_dir)
    if existing is None or canonical_sha256(existing) == canonical_sha256(document):
        return
    trusted = load_root(data_dir, now)
    try:
        verify_root_update(trusted, document, now)
    except ProtocolError as exc:
        raise EnrollmentError(
            f"the server's root (version {offered.version}) does not match the trusted {ROOT_FILE} "
            f"(version {trusted.version}): {type(exc).__name__}: {exc}") from None


def _save_tls_identity(data_dir: Path, answer: dict[str, Any], key: Any, device_id: str) -> None:
    """Keep the certificate the fleet CA issued for our key, and the CA (a server without one sends neither)."""
    try:
        if isinstance(answer.get("ca_certificate"), str):
            identity.save_ca(data_dir, answer["ca_certificate"])
        if isinstance(answer.get("certificate"), str):
            certificate = identity.parse_certificate(answer["certificate"], key, device_id)
            identity.save_identity(data_dir, key, certificate)
            log.info("event=certificate_stored device=%s not_after=%s", device_id,
                     certificate.not_valid_after_utc.isoformat())
    except StateFileError as exc:
        raise EnrollmentError(str(exc)) from None


def enroll(server_url: str, token: str, facts: DeviceFacts, tags: tuple[str, ...], agent_version: str,
           data_dir: Path, timeout: float = 30.0) -> Enrollment:
    """Enroll (or re-enroll) this device; persist the credential and the trusted root."""
    server_url = server_url.rstrip("/")
    key = identity.new_key()  # this device's own TLS key: only a CSR for it leaves the device
    payload = {
        "device_id": facts.device_id,
        "bootstrap_token": token,
        "arch": facts.arch,
        "ram_mb": facts.ram_mb,
        "runtimes": list(facts.runtimes),
        "agent_version": agent_version,
        "tags": list(tags),
        "csr": identity.make_csr(key, facts.device_id),
    }
    status, answer = _post_json(server_url + ENROLL_PATH, payload, timeout)
    if not isinstance(answer, dict):
        raise EnrollmentError("the server's enrollment answer is not a JSON object")
    base_url = answer.get("artifact_base_url")
    for name in ("device_id", "credential", "mqtt_url"):
        if not isinstance(answer.get(name), str) or not answer[name]:
            raise EnrollmentError(f"the server's enrollment answer lacks {name}")
    if answer["device_id"] != facts.device_id:
        raise EnrollmentError(f"the server enrolled {answer['device_id']!r}, not {facts.device_id!r}")
    if base_url is not None and not isinstance(base_url, str):
        raise EnrollmentError("the server's artifact_base_url must be a string or null")
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    _check_root(data_dir, answer.get("root"), datetime.now(UTC))
    enrollment = Enrollment(facts.device_id, answer["credential"], answer["mqtt_url"], server_url,
                            base_url or None, time.time())
    atomic_write_json(data_dir / ROOT_FILE, answer["root"])
    _save_tls_identity(data_dir, answer, key, facts.device_id)
    atomic_write_json(data_dir / ENROLLMENT_FILE, enrollment.to_dict(), mode=0o600)
    log.info("event=enrolled device=%s server=%s status=%d mqtt_url=%s", facts.device_id, server_url, status,
             enrollment.mqtt_url)
    return enrollment
