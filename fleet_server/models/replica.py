"""Server replicas that share one database and one broker: each one's heartbeat, and the
MQTT client id its persistent session lives under (``fleet_server.mqtt.replica_registry``)."""

from datetime import datetime

from sqlmodel import Field, SQLModel

import fleet_server.models.common  # noqa: F401  (the constraint naming convention applies first)
from fleet_server.core.types import UTCDateTime, utcnow


class ServerReplica(SQLModel, table=True):
    __tablename__ = "server_replica"

    server_id: str = Field(primary_key=True, max_length=40)
    mqtt_client_id: str = Field(max_length=128)
    started_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    heartbeat_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
