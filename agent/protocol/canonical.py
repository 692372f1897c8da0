"""Canonical JSON: the exact bytes that are signed and hashed.

Sorted keys, no insignificant whitespace, UTF-8, no NaN/Infinity. Parsing is
strict: duplicate keys, non-finite numbers, non-UTF-8 input and documents over
the size cap are rejected with a ``MalformedDocumentError`` subclass.
"""

import hashlib
import json
from typing import Any

from agent.protocol.errors import DocumentTooLargeError, DuplicateKeyError, MalformedDocumentError

DEFAULT_MAX_BYTES = 256 * 1024
MAX_DEPTH = 32


def canonical_bytes(document: Any) -> bytes:
    """Serialise ``document`` to canonical JSON bytes."""
    try:
        text = json.dumps(
            document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise MalformedDocumentError(f"cannot encode as canonical JSON: {exc}") from exc
    return text.encode("utf-8")


def canonical_sha256(document: Any) -> str:
    """Hex sha256 of the canonical bytes of ``document``."""
    return hashlib.sha256(canonical_bytes(document)).hexdigest()


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise DuplicateKeyError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise MalformedDocumentError(f"non-finite number {name} is not allowed")


def _check_depth(value: Any, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise MalformedDocumentError(f"document nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for item in value.values():
            _check_depth(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_depth(item, depth + 1)


def parse_json(data: bytes | str, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """Parse JSON strictly; raise ``MalformedDocumentError`` on anything odd."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if not isinstance(data, bytes | bytearray):
        raise MalformedDocumentError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise DocumentTooLargeError(f"document is {len(data)} bytes, cap is {max_bytes}")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedDocumentError(f"not UTF-8: {exc}") from exc
    try:
        value = json.loads(
            text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
        )
    except RecursionError as exc:
        raise MalformedDocumentError("document nested too deeply") from exc
    except json.JSONDecodeError as exc:
        raise MalformedDocumentError(f"invalid JSON: {exc}") from exc
    _check_depth(value)
    return value
