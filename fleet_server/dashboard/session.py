"""Dashboard sessions as signed cookies (pure: no I/O).

The cookie holds who logged in, their role, an expiry, a random nonce and the
sha256 of the API token they logged in with (never the token itself), signed
with HMAC-SHA256 under the server's session secret. Each request re-checks the
token hash against the current tokens, so revoking the token (or changing the
admin token) ends its dashboard sessions too. The CSRF token of a session is
derived from its nonce, so forms need no server-side state.
"""

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

SESSION_TTL_S = 8 * 3600
_VERSION = "v1"


@dataclass(frozen=True)
class UiSession:
    actor: str  # who, for the audit trail (token name or "admin")
    role: str  # viewer, operator or admin
    token_hash: str  # sha256 hex of the API token used to log in
    expires: int  # unix seconds
    nonce: str

    @property
    def expired(self) -> bool:
        return time.time() >= self.expires


def new_session(actor: str, role: str, token_hash: str, ttl_s: int = SESSION_TTL_S) -> UiSession:
    return UiSession(actor, role, token_hash, int(time.time()) + ttl_s, secrets.token_urlsafe(16))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, purpose: str, payload: str) -> str:
    return _b64(hmac.new(secret.encode("utf-8"), f"{purpose}:{payload}".encode(), hashlib.sha256).digest())


def encode_session(session: UiSession, secret: str) -> str:
    body = {"a": session.actor, "r": session.role, "t": session.token_hash, "e": session.expires, "n": session.nonce}
    payload = _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode("utf-8"))
    return f"{_VERSION}.{payload}.{_mac(secret, 'session', payload)}"


def decode_session(cookie: str | None, secret: str) -> UiSession | None:
    """The session in ``cookie`` if its signature is valid and it has not expired; otherwise None."""
    if not cookie or cookie.count(".") != 2:
        return None
    version, payload, mac = cookie.split(".")
    if version != _VERSION or not hmac.compare_digest(mac, _mac(secret, "session", payload)):
        return None
    try:
        body = json.loads(_unb64(payload))
        session = UiSession(str(body["a"]), str(body["r"]), str(body["t"]), int(body["e"]), str(body["n"]))
    except (ValueError, KeyError, TypeError):
        return None
    return None if session.expired else session


def csrf_token(session: UiSession, secret: str) -> str:
    return _mac(secret, "csrf", session.nonce)


def csrf_valid(session: UiSession, secret: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(given or "", csrf_token(session, secret))
