"""Telemetry: device telemetry windows, reference profiles, drift evaluations, alerts and their deliveries.

Revision ID: 0004
Revises: 0001
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table("alert",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("model_name", sa.String(length=128), nullable=True),
        sa.Column("model_version", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("active_key", sa.String(length=512), nullable=True),
        sa.Column("summary", sa.String(length=500), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert")),
        sa.UniqueConstraint("active_key", name=op.f("uq_alert_active_key"))
    )
    op.create_index("ix_alert_state_opened_at", "alert", ["state", "opened_at"], unique=False)
    op.create_table("drift_evaluation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("profile_sha256", sa.String(length=64), nullable=False),
        sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("bucket_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("evaluated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("samples", sa.BigInteger(), nullable=False),
        sa.Column("sufficient", sa.Boolean(), nullable=False),
        sa.Column("drifted", sa.Boolean(), nullable=False),
        sa.Column("drift_score", sa.Float(), nullable=True),
        sa.Column("max_psi", sa.Float(), nullable=True),
        sa.Column("min_adjusted_p", sa.Float(), nullable=True),
        sa.Column("drifted_features", sa.Integer(), nullable=False),
        sa.Column("prediction_drift", sa.Boolean(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_drift_evaluation")),
        sa.UniqueConstraint("scope", "subject", "model_name", "model_version", "bucket_start",
                            name="uq_drift_evaluation_subject_bucket"),
    )
    op.create_index("ix_drift_evaluation_bucket_start", "drift_evaluation", ["bucket_start"], unique=False)
    op.create_table("reference_profile",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("input_name", sa.String(length=256), nullable=False),
        sa.Column("samples", sa.BigInteger(), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_reference_profile"))
    )
    op.create_table("telemetry_window",
        sa.Column("device_id", sa.String(length=63), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_name", sa.String(length=128), nullable=True),
        sa.Column("model_version", sa.Integer(), nullable=True),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("latency_p50_ms", sa.Float(), nullable=True),
        sa.Column("latency_p95_ms", sa.Float(), nullable=True),
        sa.Column("latency_p99_ms", sa.Float(), nullable=True),
        sa.Column("latency_counts", sa.JSON(), nullable=False),
        sa.Column("profile_sha256", sa.String(length=64), nullable=True),
        sa.Column("feature_counts", sa.JSON(), nullable=True),
        sa.Column("feature_missing", sa.JSON(), nullable=True),
        sa.Column("predictions", sa.JSON(), nullable=True),
        sa.Column("schema_violations", sa.Integer(), nullable=False),
        sa.Column("out_of_range", sa.BigInteger(), nullable=False),
        sa.Column("nan_count", sa.BigInteger(), nullable=False),
        sa.Column("cpu_percent", sa.Float(), nullable=True),
        sa.Column("rss_bytes", sa.BigInteger(), nullable=True),
        sa.Column("temperature_c", sa.Float(), nullable=True),
        sa.Column("disk_free_bytes", sa.BigInteger(), nullable=True),
        sa.Column("evicted", sa.Integer(), nullable=False),
        sa.Column("shadow", sa.JSON(), nullable=True),
        sa.Column("shadow_agreement", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("device_id", "window_start", "seq", name=op.f("pk_telemetry_window"))
    )
    op.create_index("ix_telemetry_window_model", "telemetry_window", ["model_name", "model_version", "window_start"],
                    unique=False)
    op.create_index("ix_telemetry_window_window_start", "telemetry_window", ["window_start"], unique=False)
    op.create_table("alert_delivery",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=2048), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=1000), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["alert_id"], ["alert.id"], name=op.f("fk_alert_delivery_alert_id_alert"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_delivery"))
    )
    op.create_index(op.f("ix_alert_delivery_alert_id"), "alert_delivery", ["alert_id"], unique=False)
    op.create_index("ix_alert_delivery_state_next_attempt_at", "alert_delivery", ["state", "next_attempt_at"],
                    unique=False)


def downgrade() -> None:
    for table in ("alert_delivery", "alert", "drift_evaluation", "telemetry_window", "reference_profile"):
        op.drop_table(table)
