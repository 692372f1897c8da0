"""Replicas: one row per running server replica (heartbeat, MQTT session client id).

Revision ID: 0009
Revises: 0001
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table("server_replica",
    sa.Column("server_id", sa.String(length=40), nullable=False),
    sa.Column("mqtt_client_id", sa.String(length=128), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("server_id", name=op.f("pk_server_replica"))
    )


def downgrade() -> None:
    op.drop_table("server_replica")
