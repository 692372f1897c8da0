"""Store a batch of device reports (``status``/``presence``) in one write transaction.

Each report has exactly the effect ``ingest.record_report`` gives it on its own, applied
in arrival order (a device's later report sees its earlier ones of the same batch;
a redelivered report is recognised against the batch's own rows too). What a batch
saves is a write transaction, and its commit, per report, and two primary-key loads
per report: the batch's devices (locked, see ``apply_batch``) and revocations are read
with one query each.

The caller commits (``commit_batch``) and writes each report's log line after the
commit; a batch the database refuses as a whole is rolled back, and the caller
stores its reports one by one so that one bad report cannot block the others.
"""

from collections.abc import Sequence

from sqlmodel import Session, col, select

from agent.protocol.messages import PresenceMessage, StatusMessage
from fleet_server.core.db import begin_write
from fleet_server.models.device import Device
from fleet_server.models.pki import DeviceRevocation
from fleet_server.services.ingest import Applied, IngestOutcome, apply_report

Report = StatusMessage | PresenceMessage


def apply_batch(session: Session, reports: Sequence[Report]) -> list[Applied]:
    """Apply ``reports`` in order in a new write transaction on ``session``, without committing."""
    begin_write(session)
    device_ids = sorted({report.device_id for report in reports})
    # Locked (PostgreSQL; SQLite's write transaction is exclusive anyway), in one order: another replica's
    # batch with reports of the same devices waits for this one's commit instead of overwriting it.
    devices = {device.device_id: device for device in session.exec(
        select(Device).where(col(Device.device_id).in_(device_ids)).order_by(col(Device.device_id))
        .with_for_update())}
    revoked = set(session.exec(select(DeviceRevocation.device_id)
                               .where(col(DeviceRevocation.device_id).in_(device_ids))))
    applied: list[Applied] = []
    for report in reports:
        device = devices.get(report.device_id)
        if device is None or report.device_id in revoked:  # unknown or revoked
            applied.append(Applied(IngestOutcome.UNKNOWN_DEVICE))
            continue
        applied.append(apply_report(session, device, report))
    return applied


def commit_batch(session: Session, reports: Sequence[Report]) -> list[Applied]:
    """Apply and commit; raises (after rolling back) when the database refuses the batch."""
    try:
        applied = apply_batch(session, reports)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return applied
