"""Drift evaluations: one row per subject (a device, or a cohort of model version x tag) and time bucket.

The evaluator re-evaluates the buckets of its sliding range on every pass and
upserts these rows, so late (store-and-forward) windows inside the range are
taken into account. ``drift_score`` is the largest Jensen-Shannon divergence
(base 2, 0..1) of any feature or of the predictions against the reference.
"""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

import fleet_server.models.common  # noqa: F401  (the constraint naming convention applies first)
from fleet_server.core.types import UTCDateTime, utcnow


class DriftEvaluation(SQLModel, table=True):
    __tablename__ = "drift_evaluation"
    __table_args__ = (
        UniqueConstraint("scope", "subject", "model_name", "model_version", "bucket_start",
                         name="uq_drift_evaluation_subject_bucket"),
        Index("ix_drift_evaluation_bucket_start", "bucket_start"),
    )

    id: int | None = Field(default=None, primary_key=True)
    scope: str = Field(max_length=16)  # "device" or "cohort"
    subject: str = Field(max_length=255)  # device id, or the cohort's tag
    model_name: str = Field(max_length=128)
    model_version: int
    profile_sha256: str = Field(max_length=64)
    bucket_start: datetime = Field(sa_type=UTCDateTime)
    bucket_end: datetime = Field(sa_type=UTCDateTime)
    evaluated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    samples: int = Field(default=0, sa_type=BigInteger)
    sufficient: bool = False  # enough samples to test
    drifted: bool = False
    drift_score: float | None = None
    max_psi: float | None = None
    min_adjusted_p: float | None = None
    drifted_features: int = 0
    prediction_drift: bool = False
    details: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)  # the most drifted features
