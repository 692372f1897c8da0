"""Schemas shared by several resources."""

import re

from pydantic import BaseModel
from sqlmodel import SQLModel

from agent.protocol import fields as protocol_fields

# Named constraints keep future (SQLite batch) migrations deterministic.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

NAME_PATTERN = protocol_fields.NAME_PATTERN.pattern  # model names, precisions, variant names
TAG_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}"
TAG_REGEX = re.compile(TAG_PATTERN)
SHA256_PATTERN = r"[0-9a-f]{64}"


class ErrorDetail(BaseModel):
    """Every error response: one human-readable message."""

    detail: str


class TensorSchema(BaseModel):
    name: str
    dtype: str  # numpy dtype name, e.g. "float32"
    shape: list[int | None]  # None marks a dynamic dimension
