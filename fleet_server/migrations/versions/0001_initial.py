"""Initial schema: model registry, releases, devices, deployments and their state history.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "device",
        sa.Column("arch", sa.String(length=64), nullable=False),
        sa.Column("ram_mb", sa.Integer(), nullable=False),
        sa.Column("runtimes", sa.JSON(), nullable=False),
        sa.Column("agent_version", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=63), nullable=False),
        sa.Column("credential_hash", sa.String(length=64), nullable=False),
        sa.Column("enrolled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("credential_rotated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("directive_sequence", sa.Integer(), nullable=False),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=True),
        sa.Column("presence_timestamp", sa.Float(), nullable=True),
        sa.Column("uptime_s", sa.Float(), nullable=True),
        sa.Column("installed_models", sa.JSON(), nullable=False),
        sa.Column("deployment_state", sa.String(length=32), nullable=True),
        sa.Column("deployment_state_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_device")),
    )
    with op.batch_alter_table("device", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_device_credential_hash"), ["credential_hash"], unique=True)

    op.create_table(
        "model",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model")),
    )
    with op.batch_alter_table("model", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_model_name"), ["name"], unique=True)

    op.create_table(
        "device_tag",
        sa.Column("device_id", sa.String(length=63), nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["device.device_id"], name=op.f("fk_device_tag_device_id_device"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("device_id", "tag", name=op.f("pk_device_tag")),
    )
    with op.batch_alter_table("device_tag", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_device_tag_tag"), ["tag"], unique=False)

    op.create_table(
        "model_version",
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("runtime", sa.String(length=32), nullable=False),
        sa.Column("precision", sa.String(length=128), nullable=False),
        sa.Column("arch", sa.JSON(), nullable=False),
        sa.Column("min_ram_mb", sa.Integer(), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("outputs", sa.JSON(), nullable=False),
        sa.Column("lineage", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["model.id"], name=op.f("fk_model_version_model_id_model")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_version")),
        sa.UniqueConstraint("model_id", "version", name=op.f("uq_model_version_model_id_version")),
    )
    with op.batch_alter_table("model_version", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_model_version_model_id"), ["model_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_model_version_sha256"), ["sha256"], unique=False)

    op.create_table(
        "release",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("envelope", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_version_id"], ["model_version.id"], name=op.f("fk_release_model_version_id_model_version")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_release")),
        sa.UniqueConstraint("model_version_id", name=op.f("uq_release_model_version_id")),
        sa.UniqueConstraint("name", "version", name=op.f("uq_release_name_version")),
        sa.UniqueConstraint("sha256", name=op.f("uq_release_sha256")),
    )
    with op.batch_alter_table("release", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_release_name"), ["name"], unique=False)

    op.create_table(
        "deployment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("release_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["release_id"], ["release.id"], name=op.f("fk_deployment_release_id_release")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployment")),
    )
    with op.batch_alter_table("deployment", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_deployment_release_id"), ["release_id"], unique=False)

    op.create_table(
        "deployment_target",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(length=63), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("directive", sa.Text(), nullable=False),
        sa.Column("directive_expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("state_reported_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"], ["deployment.id"], name=op.f("fk_deployment_target_deployment_id_deployment")
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["device.device_id"], name=op.f("fk_deployment_target_device_id_device")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployment_target")),
        sa.UniqueConstraint("device_id", "sequence", name=op.f("uq_deployment_target_device_id_sequence")),
    )
    with op.batch_alter_table("deployment_target", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_deployment_target_deployment_id"), ["deployment_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_deployment_target_device_id"), ["device_id"], unique=False)

    op.create_table(
        "deployment_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("target_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("variant", sa.String(length=128), nullable=True),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["target_id"], ["deployment_target.id"], name=op.f("fk_deployment_event_target_id_deployment_target")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployment_event")),
        sa.UniqueConstraint(
            "target_id", "state", "reported_at", name=op.f("uq_deployment_event_target_id_state_reported_at")
        ),
    )
    with op.batch_alter_table("deployment_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_deployment_event_target_id"), ["target_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("deployment_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deployment_event_target_id"))

    op.drop_table("deployment_event")
    with op.batch_alter_table("deployment_target", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deployment_target_device_id"))
        batch_op.drop_index(batch_op.f("ix_deployment_target_deployment_id"))

    op.drop_table("deployment_target")
    with op.batch_alter_table("deployment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deployment_release_id"))

    op.drop_table("deployment")
    with op.batch_alter_table("release", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_release_name"))

    op.drop_table("release")
    with op.batch_alter_table("model_version", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_version_sha256"))
        batch_op.drop_index(batch_op.f("ix_model_version_model_id"))

    op.drop_table("model_version")
    with op.batch_alter_table("device_tag", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_device_tag_tag"))

    op.drop_table("device_tag")
    with op.batch_alter_table("model", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_name"))

    op.drop_table("model")
    with op.batch_alter_table("device", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_device_credential_hash"))

    op.drop_table("device")
