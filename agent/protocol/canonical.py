"""Canonical JSON: the exact bytes that are signed and hashed.

Sorted keys, no insignificant whitespace, UTF-8, no NaN/Infinity. Parsing is
strict: duplicate keys, non-finite numbers, non-UTF-8 input and documents over
the size cap are rejected with a ``MalformedDocumentError`` subclass.
"""

import hashlib
import json
import math
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
        return text.encode("utf-8")
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError (lone surrogates) is a ValueError
        raise MalformedDocumentError(f"cannot encode as canonical JSON: {exc}") from exc


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


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 overflows to inf without going through parse_constant
        raise MalformedDocumentError(f"non-finite number {text} is not allowed")
    return value


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedDocumentError("string holds a lone surrogate escape, which is not text") from None


def _check_structure(value: Any, depth: int = 0) -> None:
    """Depth cap, and every string (keys too) must be encodable so canonical_bytes cannot fail."""
    if depth > MAX_DEPTH:
        raise MalformedDocumentError(f"document nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        _check_text(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _check_structure(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_structure(item, depth + 1)


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
            text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
    except RecursionError as exc:
        raise MalformedDocumentError("document nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, and integers over the int-to-str digit limit
        raise MalformedDocumentError(f"invalid JSON: {exc}") from exc
    _check_structure(value)
    return value
