"""Request body of ``PATCH /api/v1/devices/{device_id}/tags``."""

from pydantic import BaseModel, field_validator
from pydantic import Field as PydanticField

from fleet_server.models.device import MAX_TAGS, validate_tags


class DeviceTagsUpdate(BaseModel):
    add: list[str] = PydanticField(default_factory=list, max_length=MAX_TAGS)
    remove: list[str] = PydanticField(default_factory=list, max_length=MAX_TAGS)

    @field_validator("add", "remove")
    @classmethod
    def _valid_tags(cls, value: list[str]) -> list[str]:
        return validate_tags(value)
