"""The embedded MQTT broker (amqtt, MQTT 3.1.1) for the zero-setup default.

amqtt is asyncio-based; it runs on its own event loop in a background thread
so it is independent of the web server's loop and of paho's network thread.
"""

import asyncio
import logging
import threading
from concurrent.futures import Future
from typing import Any

from fleet_server.errors import EmbeddedBrokerError
from fleet_server.mqtt.broker_url import BrokerAddress
from fleet_server.mqtt.embedded_auth import BrokerAuthenticator, plugin_config

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0
LISTENER = "default"


class EmbeddedBroker:
    def __init__(self, host: str = "127.0.0.1", port: int = 1883,
                 authenticator: BrokerAuthenticator | None = None) -> None:
        self.host = host
        self.authenticator = authenticator  # None: open access (tests); the server always passes one
        self.requested_port = port
        self.port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Any = None
        self._started: Future[int] = Future()

    @property
    def address(self) -> BrokerAddress:
        if self.port is None:
            raise EmbeddedBrokerError("the embedded broker is not running")
        return BrokerAddress(self.host, self.port)

    def _config(self) -> dict[str, Any]:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return {
            "listeners": {LISTENER: {"type": "tcp", "bind": f"{host}:{self.requested_port}"}},
            "plugins": plugin_config(self.authenticator),
        }

    def start(self) -> BrokerAddress:
        if self._thread is not None:
            raise EmbeddedBrokerError("the embedded broker was already started")
        self._thread = threading.Thread(target=self._run, name="edgefleet-embedded-broker", daemon=True)
        self._thread.start()
        try:
            self.port = self._started.result(timeout=START_TIMEOUT_S)
        except TimeoutError:
            raise EmbeddedBrokerError(f"the embedded broker did not start within {START_TIMEOUT_S:.0f}s") from None
        except Exception as exc:
            self._thread.join(timeout=STOP_TIMEOUT_S)
            self._thread = None
            raise EmbeddedBrokerError(f"cannot start the embedded MQTT broker on {self.host}:"
                                      f"{self.requested_port}: {exc.__cause__ or exc}") from None
        logger.info("server event=embedded_broker_started url=%s", self.address.url)
        return self.address

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._start_broker())
        except BaseException as exc:  # report any start failure to start()
            self._started.set_exception(exc)
            loop.close()
            return
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _start_broker(self) -> None:
        from amqtt.broker import Broker

        self._broker = Broker(self._config())
        await self._broker.start()
        self._started.set_result(self._bound_port())

    def _bound_port(self) -> int:
        if self.requested_port:
            return self.requested_port
        server = self._broker._servers[LISTENER]  # amqtt exposes no public accessor for the bound socket
        return int(server.instance.sockets[0].getsockname()[1])

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._broker.shutdown(), loop).result(timeout=STOP_TIMEOUT_S)
        except Exception as exc:  # shutting down anyway
            logger.warning("server event=embedded_broker_stop_failed error=%s", exc)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=STOP_TIMEOUT_S)
        self._thread = None
        logger.info("server event=embedded_broker_stopped")
