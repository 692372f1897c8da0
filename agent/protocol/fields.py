"""Strict field readers shared by every document parser.

Each reader takes the containing mapping and a key and returns the value or
raises ``MalformedDocumentError`` naming the field, so parsers read as a list
of fields instead of a thicket of isinstance checks.
"""

import re
from datetime import UTC, datetime
from typing import Any

from agent.protocol.errors import MalformedDocumentError, UnsafePathError

MAX_INT = 2**53 - 1
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
HEX64 = re.compile(r"[0-9a-f]{64}")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
SAFE_PATH_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def mapping(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedDocumentError(f"{what} must be an object, got {type(value).__name__}")
    return value


def only_keys(obj: dict[str, Any], allowed: set[str], what: str) -> None:
    unknown = set(obj) - allowed
    if unknown:
        raise MalformedDocumentError(f"{what} has unknown fields: {sorted(unknown)}")


def get(obj: dict[str, Any], key: str, what: str) -> Any:
    if key not in obj:
        raise MalformedDocumentError(f"{what} is missing field {key!r}")
    return obj[key]


def string(obj: dict[str, Any], key: str, what: str, pattern: re.Pattern[str] | None = None,
           max_len: int = 1024) -> str:
    value = get(obj, key, what)
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise MalformedDocumentError(f"{what}.{key} must be a non-empty string of <= {max_len} chars")
    if pattern is not None and not pattern.fullmatch(value):
        raise MalformedDocumentError(f"{what}.{key} has an invalid format: {value!r}")
    return value


def optional_string(obj: dict[str, Any], key: str, what: str,
                    pattern: re.Pattern[str] | None = None) -> str | None:
    if obj.get(key) is None:
        return None
    return string(obj, key, what, pattern)


def integer(obj: dict[str, Any], key: str, what: str, minimum: int = 0,
            maximum: int = MAX_INT) -> int:
    value = get(obj, key, what)
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedDocumentError(f"{what}.{key} must be an integer")
    if not minimum <= value <= maximum:
        raise MalformedDocumentError(f"{what}.{key}={value} is outside [{minimum}, {maximum}]")
    return value


def sha256_hex(obj: dict[str, Any], key: str, what: str) -> str:
    return string(obj, key, what, HEX64)


def timestamp(obj: dict[str, Any], key: str, what: str) -> datetime:
    return parse_time(string(obj, key, what, max_len=20), f"{what}.{key}")


def parse_time(text: str, what: str = "time") -> datetime:
    try:
        return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise MalformedDocumentError(f"{what} must look like 2026-01-31T12:00:00Z") from None


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(TIME_FORMAT)


def string_list(obj: dict[str, Any], key: str, what: str, max_items: int = 64) -> tuple[str, ...]:
    value = get(obj, key, what)
    if not isinstance(value, list) or len(value) > max_items:
        raise MalformedDocumentError(f"{what}.{key} must be a list of <= {max_items} strings")
    for item in value:
        if not isinstance(item, str) or not item or len(item) > 128:
            raise MalformedDocumentError(f"{what}.{key} must contain non-empty strings")
    return tuple(value)


def object_list(obj: dict[str, Any], key: str, what: str, max_items: int = 256) -> list[dict[str, Any]]:
    value = get(obj, key, what)
    if not isinstance(value, list) or len(value) > max_items:
        raise MalformedDocumentError(f"{what}.{key} must be a list of <= {max_items} objects")
    return [mapping(item, f"{what}.{key}[]") for item in value]


def safe_relative_path(obj: dict[str, Any], key: str, what: str) -> str:
    value = string(obj, key, what, max_len=512)
    parts = value.split("/")
    if value.startswith("/") or "\\" in value or any(
        not SAFE_PATH_PART.fullmatch(part) or part in {".", ".."} for part in parts
    ):
        raise UnsafePathError(f"{what}.{key}={value!r} is not a safe relative path")
    return value
