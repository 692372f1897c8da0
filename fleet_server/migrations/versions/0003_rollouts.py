"""Rollouts: staged rollouts with their phases and per-device progress, and the controller lease.

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table("controller_lease",
    sa.Column("name", sa.String(length=64), nullable=False),
    sa.Column("holder", sa.String(length=128), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("name", name=op.f("pk_controller_lease"))
    )
    op.create_table("rollout",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("name", sa.String(length=128), nullable=True),
    sa.Column("release_id", sa.Integer(), nullable=False),
    sa.Column("release_b_id", sa.Integer(), nullable=True),
    sa.Column("b_share", sa.Float(), nullable=False),
    sa.Column("action", sa.String(length=16), nullable=False),
    sa.Column("state", sa.String(length=16), nullable=False),
    sa.Column("reason", sa.Text(), nullable=True),
    sa.Column("target", sa.JSON(), nullable=False),
    sa.Column("criteria", sa.JSON(), nullable=False),
    sa.Column("rate_limit_per_min", sa.Integer(), nullable=False),
    sa.Column("device_timeout_s", sa.Float(), nullable=False),
    sa.Column("max_retries", sa.Integer(), nullable=False),
    sa.Column("retry_backoff_s", sa.Float(), nullable=False),
    sa.Column("baseline_s", sa.Float(), nullable=False),
    sa.Column("current_phase", sa.Integer(), nullable=False),
    sa.Column("source_rollout_id", sa.Integer(), nullable=True),
    sa.Column("created_by", sa.String(length=128), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(["release_b_id"], ["release.id"], name=op.f("fk_rollout_release_b_id_release")),
    sa.ForeignKeyConstraint(["release_id"], ["release.id"], name=op.f("fk_rollout_release_id_release")),
    sa.ForeignKeyConstraint(["source_rollout_id"], ["rollout.id"], name=op.f("fk_rollout_source_rollout_id_rollout")),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_rollout"))
    )
    with op.batch_alter_table("rollout", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rollout_release_id"), ["release_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_rollout_state"), ["state"], unique=False)

    op.create_table("rollout_phase",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("rollout_id", sa.Integer(), nullable=False),
    sa.Column("index", sa.Integer(), nullable=False),
    sa.Column("share", sa.Float(), nullable=True),
    sa.Column("count", sa.Integer(), nullable=True),
    sa.Column("bake_s", sa.Float(), nullable=False),
    sa.Column("success_threshold", sa.Float(), nullable=False),
    sa.Column("state", sa.String(length=16), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("bake_started_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(["rollout_id"], ["rollout.id"], name=op.f("fk_rollout_phase_rollout_id_rollout")),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_rollout_phase")),
    sa.UniqueConstraint("rollout_id", "index", name=op.f("uq_rollout_phase_rollout_id_index"))
    )
    with op.batch_alter_table("rollout_phase", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rollout_phase_rollout_id"), ["rollout_id"], unique=False)

    op.create_table("rollout_device",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("rollout_id", sa.Integer(), nullable=False),
    sa.Column("device_id", sa.String(length=63), nullable=False),
    sa.Column("position", sa.Integer(), nullable=False),
    sa.Column("phase", sa.Integer(), nullable=True),
    sa.Column("cohort", sa.String(length=1), nullable=False),
    sa.Column("status", sa.String(length=16), nullable=False),
    sa.Column("variant", sa.String(length=128), nullable=True),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("target_id", sa.Integer(), nullable=True),
    sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("installed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("rollback_attempts", sa.Integer(), nullable=False),
    sa.Column("reason", sa.Text(), nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(["device_id"], ["device.device_id"], name=op.f("fk_rollout_device_device_id_device")),
    sa.ForeignKeyConstraint(["rollout_id"], ["rollout.id"], name=op.f("fk_rollout_device_rollout_id_rollout")),
    sa.ForeignKeyConstraint(["target_id"], ["deployment_target.id"],
                            name=op.f("fk_rollout_device_target_id_deployment_target")),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_rollout_device")),
    sa.UniqueConstraint("rollout_id", "device_id", name=op.f("uq_rollout_device_rollout_id_device_id"))
    )
    with op.batch_alter_table("rollout_device", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rollout_device_device_id"), ["device_id"], unique=False)
        batch_op.create_index("ix_rollout_device_rollout_status", ["rollout_id", "status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("rollout_device", schema=None) as batch_op:
        batch_op.drop_index("ix_rollout_device_rollout_status")
        batch_op.drop_index(batch_op.f("ix_rollout_device_device_id"))

    op.drop_table("rollout_device")
    with op.batch_alter_table("rollout_phase", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rollout_phase_rollout_id"))

    op.drop_table("rollout_phase")
    with op.batch_alter_table("rollout", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rollout_state"))
        batch_op.drop_index(batch_op.f("ix_rollout_release_id"))

    op.drop_table("rollout")
    op.drop_table("controller_lease")
