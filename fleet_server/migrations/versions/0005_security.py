"""Security: operator API tokens, single-use bootstrap tokens, device certificates
and revocations, the trusted-root history and the hash-chained audit trail.

Revision ID: 0005
Revises: 0001
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GENESIS_HASH = "0" * 64


def _time(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "api_token",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        _time("created_at"),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        _time("expires_at", nullable=True),
        _time("revoked_at", nullable=True),
        sa.Column("revoked_by", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_token")),
    )
    with op.batch_alter_table("api_token", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_token_token_hash"), ["token_hash"], unique=True)

    op.create_table(
        "bootstrap_token",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=63), nullable=True),
        _time("created_at"),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        _time("expires_at"),
        _time("used_at", nullable=True),
        sa.Column("used_by", sa.String(length=63), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bootstrap_token")),
    )
    with op.batch_alter_table("bootstrap_token", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_bootstrap_token_token_hash"), ["token_hash"], unique=True)

    op.create_table(
        "audit_entry",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        _time("created_at"),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("entry_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_entry")),
        sa.UniqueConstraint("entry_hash", name=op.f("uq_audit_entry_entry_hash")),
    )
    with op.batch_alter_table("audit_entry", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_entry_action"), ["action"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_entry_actor"), ["actor"], unique=False)

    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("entry_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_head")),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "entry_hash": GENESIS_HASH}])

    op.create_table(
        "trusted_root",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("envelope", sa.Text(), nullable=False),
        _time("recorded_at"),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_trusted_root")),
        sa.UniqueConstraint("sha256", name=op.f("uq_trusted_root_sha256")),
    )

    op.create_table(
        "device_certificate",
        sa.Column("serial", sa.String(length=40), nullable=False),
        sa.Column("device_id", sa.String(length=63), nullable=False),
        sa.Column("fingerprint_sha256", sa.String(length=64), nullable=False),
        _time("not_before"),
        _time("not_after"),
        _time("issued_at"),
        _time("revoked_at", nullable=True),
        sa.ForeignKeyConstraint(["device_id"], ["device.device_id"],
                                name=op.f("fk_device_certificate_device_id_device"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("serial", name=op.f("pk_device_certificate")),
    )
    with op.batch_alter_table("device_certificate", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_device_certificate_device_id"), ["device_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_device_certificate_not_after"), ["not_after"], unique=False)

    op.create_table(
        "device_revocation",
        sa.Column("device_id", sa.String(length=63), nullable=False),
        _time("revoked_at"),
        sa.Column("revoked_by", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["device.device_id"],
                                name=op.f("fk_device_revocation_device_id_device"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_device_revocation")),
    )


def downgrade() -> None:
    for table in ("device_revocation", "device_certificate", "trusted_root", "audit_head", "audit_entry",
                  "bootstrap_token", "api_token"):
        op.drop_table(table)
