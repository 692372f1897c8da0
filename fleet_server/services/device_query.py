"""Device list queries for the API, the CLI and the dashboard: filters, a stable
order, pagination done in SQL (lists stay fast at thousands of devices), and the
fleet summary of the overview page (online/offline, models in use, states)."""

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_
from sqlmodel import Session, col, func, select

from fleet_server.models.device import Device, DevicePublic, DeviceTag
from fleet_server.services import devices

MAX_PAGE = 1000


@dataclass(frozen=True)
class DeviceFilter:
    """Every field narrows the list; None (or empty) means "any"."""

    tag: str | None = None
    online: bool | None = None
    state: str | None = None  # latest deployment state the device reported ("none": never reported)
    model: str | None = None  # current model: "name" or "name:version"
    search: str | None = None  # device id contains this text


@dataclass(frozen=True)
class DevicePage:
    devices: list[DevicePublic]
    total: int  # devices matching the filter, all pages
    limit: int
    offset: int


def current_model_name() -> Any:
    return Device.installed_models[0]["name"].as_string()


def current_model_version() -> Any:
    return Device.installed_models[0]["version"].as_integer()


def parse_model_selector(text: str) -> tuple[str, int | None]:
    """``"digits"`` or ``"digits:3"`` (also ``digits@3``, ``digits v3``) -> (name, version or None)."""
    text = text.strip()
    for separator in (":", "@", " v"):
        name, found, version = text.rpartition(separator)
        if found and name and version.isdigit():
            return name.strip(), int(version)
    return text, None


def _conditions(device_filter: DeviceFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if device_filter.tag:
        conditions.append(col(Device.device_id).in_(
            select(DeviceTag.device_id).where(DeviceTag.tag == device_filter.tag)))
    if device_filter.online is not None:
        conditions.append(col(Device.online).is_(device_filter.online))
    if device_filter.state:
        if device_filter.state == "none":
            conditions.append(col(Device.deployment_state).is_(None))
        else:
            conditions.append(col(Device.deployment_state) == device_filter.state)
    if device_filter.model:
        name, version = parse_model_selector(device_filter.model)
        conditions.append(current_model_name() == name)
        if version is not None:
            conditions.append(current_model_version() == version)
    if device_filter.search:
        escaped = device_filter.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        conditions.append(col(Device.device_id).like(f"%{escaped}%", escape="\\"))
    return conditions


def query_devices(session: Session, device_filter: DeviceFilter, limit: int = 100, offset: int = 0) -> DevicePage:
    """One page of matching devices ordered by id, with their tags, and the total match count."""
    limit = max(1, min(limit, MAX_PAGE))
    offset = max(0, offset)
    conditions = _conditions(device_filter)
    count = select(func.count()).select_from(Device)
    statement = select(Device).order_by(col(Device.device_id)).offset(offset).limit(limit)
    if conditions:
        count, statement = count.where(and_(*conditions)), statement.where(and_(*conditions))
    total = session.exec(count).one()
    rows = session.exec(statement).all()
    tags = devices.tags_by_device(session, [row.device_id for row in rows])
    views = [devices.public_view(session, row, tags.get(row.device_id, []), with_latest=False) for row in rows]
    return DevicePage(views, total, limit, offset)


@dataclass(frozen=True)
class ModelInUse:
    name: str
    version: int
    devices: int


@dataclass(frozen=True)
class FleetSummary:
    total: int
    online: int
    states: dict[str, int]  # latest reported deployment state -> devices ("none" for never)
    models: list[ModelInUse]  # current model versions, most used first
    without_model: int

    @property
    def offline(self) -> int:
        return self.total - self.online


def fleet_summary(session: Session) -> FleetSummary:
    """Aggregates computed in SQL (no per-device rows are loaded)."""
    total = session.exec(select(func.count()).select_from(Device)).one()
    online = session.exec(select(func.count()).select_from(Device).where(col(Device.online).is_(True))).one()
    states = {
        state or "none": count
        for state, count in session.exec(
            select(Device.deployment_state, func.count()).group_by(col(Device.deployment_state))).all()
    }
    name, version = current_model_name(), current_model_version()
    rows = session.exec(
        select(name, version, func.count()).where(name.is_not(None)).group_by(name, version)
    ).all()
    models = sorted((ModelInUse(n, v, c) for n, v, c in rows), key=lambda m: (-m.devices, m.name, -m.version))
    return FleetSummary(total, online, states, models, total - sum(model.devices for model in models))
