"""Request body of ``PATCH /api/v1/devices/{device_id}/tags``."""

from pydantic import BaseModel
from pydantic import Field as PydanticField

from fleet_server.models.device import MAX_TAGS, TagList


class DeviceTagsUpdate(BaseModel):
    add: TagList = PydanticField(default_factory=list, max_length=MAX_TAGS)
    remove: TagList = PydanticField(default_factory=list, max_length=MAX_TAGS)
