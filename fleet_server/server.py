"""Run the fleet server under uvicorn (``edgefleet server``)."""

import logging

import uvicorn

from fleet_server.app import create_app
from fleet_server.core.config import Settings
from fleet_server.runtime import start_runtime

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_logging(level: int = logging.INFO) -> None:
    """Log to stderr unless the caller (the CLI) configured logging already."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level, format=LOG_FORMAT)
    for noisy in ("amqtt", "transitions", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_server(settings: Settings, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Start the runtime (schema, keys, broker, bridge), then serve HTTP until interrupted.

    The runtime starts before uvicorn so that a configuration problem surfaces
    as one ``EdgeFleetError`` for the CLI to print, not as a startup traceback.
    """
    configure_logging()
    runtime = start_runtime(settings)
    try:
        app = create_app(runtime=runtime)
        config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                                timeout_graceful_shutdown=10)
        uvicorn.Server(config).run()
    finally:
        runtime.stop()
