"""Compression: jobs, the variants they produced (artifacts of a model version), and release links.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "compression_job",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("stage", sa.String(length=128), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("calibration_sha256", sa.String(length=64), nullable=False),
        sa.Column("validation_sha256", sa.String(length=64), nullable=True),
        sa.Column("report", sa.JSON(), nullable=True),
        sa.Column("profile_sha256", sa.String(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["model_version_id"], ["model_version.id"],
                                name=op.f("fk_compression_job_model_version_id_model_version")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_compression_job")),
    )
    with op.batch_alter_table("compression_job", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_compression_job_model_version_id"), ["model_version_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_compression_job_status"), ["status"], unique=False)

    op.create_table(
        "model_variant",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("runtime", sa.String(length=32), nullable=False),
        sa.Column("precision", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=255), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("arch", sa.JSON(), nullable=False),
        sa.Column("min_ram_mb", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["compression_job.id"],
                                name=op.f("fk_model_variant_job_id_compression_job")),
        sa.ForeignKeyConstraint(["model_version_id"], ["model_version.id"],
                                name=op.f("fk_model_variant_model_version_id_model_version")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_variant")),
        sa.UniqueConstraint("job_id", "name", name=op.f("uq_model_variant_job_id_name")),
    )
    with op.batch_alter_table("model_variant", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_model_variant_job_id"), ["job_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_model_variant_model_version_id"), ["model_version_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_model_variant_sha256"), ["sha256"], unique=False)

    op.create_table(
        "release_compression",
        sa.Column("release_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["compression_job.id"],
                                name=op.f("fk_release_compression_job_id_compression_job")),
        sa.ForeignKeyConstraint(["release_id"], ["release.id"], name=op.f("fk_release_compression_release_id_release")),
        sa.PrimaryKeyConstraint("release_id", name=op.f("pk_release_compression")),
    )
    with op.batch_alter_table("release_compression", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_release_compression_job_id"), ["job_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("release_compression", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_release_compression_job_id"))
    op.drop_table("release_compression")
    with op.batch_alter_table("model_variant", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_variant_sha256"))
        batch_op.drop_index(batch_op.f("ix_model_variant_model_version_id"))
        batch_op.drop_index(batch_op.f("ix_model_variant_job_id"))
    op.drop_table("model_variant")
    with op.batch_alter_table("compression_job", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_compression_job_status"))
        batch_op.drop_index(batch_op.f("ix_compression_job_model_version_id"))
    op.drop_table("compression_job")
