"""Renew the device's MQTT client certificate before it expires.

A background thread sleeps until two thirds of the certificate's lifetime have
passed, then generates a fresh key, sends its CSR to
``POST {server}/api/v1/devices/me/certificate`` (authenticated by the device
credential) and stores the new key and certificate together
(``agent.identity``). ``on_renewed`` then reloads them into the MQTT TLS
context, so the next (re)connection presents the new certificate; the current
connection is not interrupted. Failures are retried with backoff until the
certificate expires (and after: a revoked device keeps being refused).
"""

import json
import logging
import random
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from agent import identity
from agent.errors import EnrollmentError, StateFileError

log = logging.getLogger(__name__)

RENEW_PATH = "/api/v1/devices/me/certificate"
RETRY_MIN_S = 30.0
RETRY_MAX_S = 3600.0
MAX_ANSWER_BYTES = 256 * 1024


class CertificateRenewer:
    def __init__(self, data_dir: Path, device_id: str, server_url: str, credential: str,
                 now: Callable[[], datetime], on_renewed: Callable[[], None],
                 ssl_context: ssl.SSLContext | None = None, timeout_s: float = 30.0) -> None:
        self.data_dir = Path(data_dir)
        self.device_id = device_id
        self.url = server_url.rstrip("/") + RENEW_PATH
        self.credential = credential
        self.now = now
        self.on_renewed = on_renewed
        self.ssl_context = ssl_context
        self.timeout_s = timeout_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if identity.load_identity(self.data_dir) is None:
            log.info("event=certificate_renewal_off reason=no_certificate")
            return
        self._thread = threading.Thread(target=self._loop, name="certificate-renewal", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def seconds_until_due(self) -> float:
        current = identity.load_identity(self.data_dir)
        if current is None:
            return RETRY_MAX_S
        due = identity.renewal_time(current.not_before, current.not_after)
        return max(0.0, (due - self.now()).total_seconds())

    def _loop(self) -> None:
        failures = 0
        while not self._stop.wait(min(self.seconds_until_due(), RETRY_MAX_S) if failures == 0 else
                                  min(RETRY_MAX_S, RETRY_MIN_S * 2 ** (failures - 1)) * random.uniform(0.5, 1.0)):
            try:
                if self.renew_if_due():
                    failures = 0
            except (EnrollmentError, StateFileError, OSError) as exc:
                failures += 1
                log.warning("event=certificate_renewal_failed attempt=%d error=%r", failures, str(exc))

    def renew_if_due(self) -> bool:
        current = identity.load_identity(self.data_dir)
        if current is None or not identity.renewal_due(current.not_before, current.not_after, self.now()):
            return False
        self.renew()
        return True

    def renew(self) -> None:
        """Fresh key, CSR to the server, store the new pair, reload the TLS context."""
        key = identity.new_key()
        body = json.dumps({"csr": identity.make_csr(key, self.device_id)}).encode()
        request = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {self.credential}"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s, context=self.ssl_context) as response:
                answer = json.loads(response.read(MAX_ANSWER_BYTES))
        except urllib.error.HTTPError as exc:
            exc.close()
            raise EnrollmentError(f"the server refused to renew the certificate (HTTP {exc.code})") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, ValueError) as exc:
            raise EnrollmentError(f"cannot renew the certificate at {self.url}: {exc}") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("certificate"), str):
            raise EnrollmentError("the server's renewal answer has no certificate")
        certificate = identity.parse_certificate(answer["certificate"], key, self.device_id)
        identity.save_identity(self.data_dir, key, certificate)
        if isinstance(answer.get("ca_certificate"), str):
            identity.save_ca(self.data_dir, answer["ca_certificate"])
        log.info("event=certificate_renewed device=%s not_after=%s", self.device_id,
                 certificate.not_valid_after_utc.isoformat())
        self.on_renewed()
