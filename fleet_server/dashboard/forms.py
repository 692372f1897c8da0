"""The dashboard's HTML forms as validated requests (pure: form text in, request out):
comma-separated lists, and the new-rollout form as a ``RolloutCreate``."""

from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError

from fleet_server.core.validation import describe_validation_errors
from fleet_server.errors import InvalidRequestError
from fleet_server.models.rollout_api import PhaseCreate, RolloutCreate

DEFAULT_PHASES = "10%, 50%, 100%"


def split_list(text: str) -> list[str]:
    """``"a, b\\nc"`` -> ``["a", "b", "c"]``: comma- or line-separated form input, blanks dropped."""
    return [item for item in (part.strip() for part in text.replace("\n", ",").split(",")) if item]


class RolloutFormError(InvalidRequestError):
    """The new-rollout form has a value that cannot be used."""

    hint = "go back, fix the form and submit it again"


@dataclass(frozen=True)
class RolloutForm:
    release: str  # "name:version"
    tags: str = ""
    device_ids: str = ""
    all_devices: bool = False
    phases: str = DEFAULT_PHASES
    bake_s: float = 60.0
    success_threshold: float = 0.9
    max_failure_rate: float = 0.1
    auto_rollback: bool = True
    name: str = ""
    start: bool = True
    start_at: str = ""  # "2026-12-01T02:00" (UTC, as the dashboard shows times) or ISO 8601 with an offset


def parse_release(text: str) -> dict[str, object]:
    name, _, version = text.strip().rpartition(":")
    if not name or not version.isdigit():
        raise RolloutFormError(f"release {text!r}: use NAME:VERSION")
    return {"name": name, "version": int(version)}


def parse_phases(text: str, bake_s: float, success_threshold: float) -> list[PhaseCreate]:
    """``"10%, 50%, 100%"`` (shares of the target) or ``"1, 5, 100%"`` (device counts, then the rest)."""
    phases = []
    for item in split_list(text) or [DEFAULT_PHASES]:
        try:
            if item.endswith("%"):
                phases.append(PhaseCreate(share=float(item[:-1]) / 100, bake_s=bake_s,
                                          success_threshold=success_threshold))
            else:
                phases.append(PhaseCreate(count=int(item), bake_s=bake_s, success_threshold=success_threshold))
        except (ValueError, ValidationError):
            raise RolloutFormError(f"phase {item!r}: use a share like 25% or a device count like 5") from None
    return phases


def parse_start_at(text: str) -> str | None:
    """The form's start time as ISO 8601 with an offset; a time without one is UTC."""
    if not text.strip():
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise RolloutFormError(f"start at {text!r}: use a date and time like 2026-12-01T02:00 (UTC)") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()


def rollout_request(form: RolloutForm) -> RolloutCreate:
    body: dict[str, object] = {
        "release": parse_release(form.release),
        "target": {"tags": split_list(form.tags), "device_ids": split_list(form.device_ids),
                   "all": form.all_devices},
        "phases": [phase.model_dump() for phase in parse_phases(form.phases, form.bake_s, form.success_threshold)],
        "criteria": {"max_failure_rate": form.max_failure_rate, "auto_rollback": form.auto_rollback},
        "name": form.name.strip() or None,
    }
    start_at = parse_start_at(form.start_at)
    if start_at is None:
        body["start"] = form.start
    else:
        body["start_at"] = start_at  # a scheduled rollout is a draft until then, whatever "start now" says
    try:
        return RolloutCreate.model_validate(body)
    except ValidationError as exc:
        raise RolloutFormError(describe_validation_errors(exc.errors())) from None
