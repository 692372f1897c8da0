"""Tokens: generation, hashing for storage, constant-time comparison, and the
operator/bootstrap secrets generated on first start when not configured.
"""

import hashlib
import hmac
import logging
import secrets
from pathlib import Path

from agent.storage import atomic_write_bytes

logger = logging.getLogger(__name__)

TOKEN_BYTES = 32


def new_token() -> str:
    """A high-entropy URL-safe random token (256 bits) that does not start with "-", which command
    lines (``--token T``) would take for an option."""
    while (token := secrets.token_urlsafe(TOKEN_BYTES)).startswith("-"):
        pass
    return token


def hash_token(token: str) -> str:
    """What is stored for a credential: sha256 hex (enough for 256-bit random tokens)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def tokens_equal(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def load_or_create_secret(path: Path, purpose: str) -> str:
    """Read the secret stored at ``path``, generating it (mode 0600) on first use.

    Logs the file path, never the secret.
    """
    if path.exists():
        value = path.read_text(encoding="utf-8").strip()
        if value:
            return value
    value = new_token()
    atomic_write_bytes(path, value.encode("utf-8") + b"\n", mode=0o600)
    logger.warning("server event=secret_generated purpose=%s path=%s", purpose, path)
    return value
