"""Run the fleet server under uvicorn (``edgefleet server``)."""

import logging

import uvicorn

from fleet_server.app import create_app
from fleet_server.core.config import Settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_logging(level: int = logging.INFO) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format=LOG_FORMAT)
    root.setLevel(level)
    for noisy in ("amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_server(settings: Settings, host: str = "127.0.0.1", port: int = 8000) -> None:
    configure_logging()
    app = create_app(settings)
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                            timeout_graceful_shutdown=10)
    uvicorn.Server(config).run()
