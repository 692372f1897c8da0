"""Alembic migrations of the fleet server's schema (run by ``core.schema.upgrade_schema``)."""
