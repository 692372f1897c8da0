"""Turn pydantic validation errors into one readable line for ``{"detail": ...}``."""

from collections.abc import Sequence
from typing import Any

MAX_REPORTED_ERRORS = 3


def describe_validation_errors(errors: Sequence[Any]) -> str:
    """``body.device_id: Value error, invalid device id ...; body.ram_mb: ...``"""
    parts = []
    for error in list(errors)[:MAX_REPORTED_ERRORS]:
        location = ".".join(str(item) for item in error.get("loc", ()) if item != "__root__")
        message = str(error.get("msg", "invalid value"))
        parts.append(f"{location}: {message}" if location else message)
    if len(errors) > MAX_REPORTED_ERRORS:
        parts.append(f"and {len(errors) - MAX_REPORTED_ERRORS} more")
    return "; ".join(parts) or "invalid request"
