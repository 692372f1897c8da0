"""Shared test helpers (standard library only: they also run in the legacy TFLite venv)."""
