"""The fleet server's errors. Every one is an ``EdgeFleetError``, so the CLI reports it in one line."""

from agent.protocol.errors import EdgeFleetError


class FleetServerError(EdgeFleetError):
    """Base class of the fleet server's errors."""


class KeyringError(FleetServerError):
    """A keyring directory cannot be written, read or does not hold a consistent key set."""


class KeyringExistsError(KeyringError):
    """``keys init`` was pointed at a directory that already holds files."""
