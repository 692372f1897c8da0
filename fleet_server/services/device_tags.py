"""Change a device's tags (what deployments and rollouts select devices by)."""

import logging

from sqlmodel import Session, col, delete, select

from fleet_server.core.db import begin_write
from fleet_server.errors import InvalidRequestError
from fleet_server.models.device import MAX_TAGS, DeviceTag
from fleet_server.services import devices
from fleet_server.services.audit import SYSTEM_ACTOR, record_audit

logger = logging.getLogger(__name__)


class TooManyTagsError(InvalidRequestError):
    """A device would end up with more tags than allowed."""


def update_tags(session: Session, device_id: str, add: list[str], remove: list[str],
                actor: str = SYSTEM_ACTOR) -> list[str]:
    """Add ``add`` and remove ``remove`` (a tag in both is added); return the device's tags, sorted."""
    begin_write(session)
    devices.get_device(session, device_id)
    current = set(session.exec(select(DeviceTag.tag).where(DeviceTag.device_id == device_id)).all())
    wanted = (current - set(remove)) | set(add)
    if len(wanted) > MAX_TAGS:
        raise TooManyTagsError(f"device {device_id!r} would have {len(wanted)} tags; the limit is {MAX_TAGS}")
    dropped = current - wanted
    if dropped:
        session.exec(delete(DeviceTag).where(col(DeviceTag.device_id) == device_id,
                                             col(DeviceTag.tag).in_(dropped)))
    for tag in sorted(wanted - current):
        session.add(DeviceTag(device_id=device_id, tag=tag))
    if wanted != current:
        session.flush()
        record_audit(session, actor, "device.tags_changed", {"device_id": device_id,
                                                             "added": sorted(wanted - current),
                                                             "removed": sorted(dropped)})
    session.commit()
    logger.info("server event=device_tags_changed device=%s added=%s removed=%s", device_id,
                ",".join(sorted(wanted - current)), ",".join(sorted(dropped)))
    return sorted(wanted)
