"""Everything the running server holds: database engine, keyring, artifact
store, secrets, the embedded broker and the MQTT bridge; started and stopped
in order by the app's lifespan."""

import logging
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from agent.storage import fsync_directory
from fleet_server.core.config import Settings
from fleet_server.core.db import create_db_engine
from fleet_server.core.schema import upgrade_schema
from fleet_server.core.security import load_or_create_secret
from fleet_server.errors import DatabaseUnavailableError
from fleet_server.keyring import ROOT_FILE, Keyring, init_keyring, load_keyring
from fleet_server.mqtt.bridge import MqttBridge
from fleet_server.mqtt.broker_url import BrokerAddress, parse_mqtt_url
from fleet_server.mqtt.directive_publisher import DirectivePublisher
from fleet_server.mqtt.embedded_broker import EmbeddedBroker
from fleet_server.services.artifact_store import ArtifactStore

logger = logging.getLogger(__name__)

WILDCARD_HOSTS = {"0.0.0.0", "::", ""}


@dataclass
class ServerRuntime:
    settings: Settings
    engine: Engine
    keyring: Keyring
    artifacts: ArtifactStore
    admin_token: str
    bootstrap_token: str
    broker_address: BrokerAddress
    bridge: MqttBridge
    publisher: DirectivePublisher
    embedded_broker: EmbeddedBroker | None = None
    _stopped: bool = field(default=False, repr=False)

    def device_mqtt_url(self, request_host: str | None) -> str:
        """The broker URL handed to devices at enrollment."""
        if self.settings.device_mqtt_url:
            return self.settings.device_mqtt_url
        address = self.broker_address
        if self.embedded_broker is not None and address.host in WILDCARD_HOSTS and request_host:
            address = BrokerAddress(request_host, address.port)
        return address.url

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.bridge.stop()
        if self.embedded_broker is not None:
            self.embedded_broker.stop()
        self.engine.dispose()
        logger.info("server event=stopped")


def open_keyring(settings: Settings) -> Keyring:
    key_dir = settings.resolved_key_dir
    if not (key_dir / ROOT_FILE).exists():
        keyring = init_keyring(key_dir)
        logger.warning("server event=keyring_initialised key_dir=%s (back up the root key; move release.pem "
                       "offline to sign releases elsewhere)", key_dir)
        return keyring
    keyring = load_keyring(key_dir)
    logger.info("server event=keyring_loaded key_dir=%s root_version=%d release_key=%s", key_dir,
                keyring.root.version, "online" if keyring.release_key is not None else "offline")
    return keyring


def start_runtime(settings: Settings) -> ServerRuntime:
    """Prepare storage and schema, load keys, start the broker (if embedded) and the bridge."""
    data_dir = settings.resolved_data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    fsync_directory(data_dir)
    engine = create_db_engine(settings.resolved_database_url)
    embedded: EmbeddedBroker | None = None
    bridge: MqttBridge | None = None
    try:
        try:
            upgrade_schema(engine)
        except OperationalError as exc:
            raise DatabaseUnavailableError(f"cannot open or migrate the database "
                                           f"{engine.url.render_as_string(hide_password=True)}: "
                                           f"{str(exc.orig or exc).strip()}") from None
        keyring = open_keyring(settings)
        artifacts = ArtifactStore(settings.resolved_artifact_dir)
        artifacts.prepare()
        admin_token = settings.admin_token or load_or_create_secret(data_dir / "admin_token", "admin")
        bootstrap_token = settings.bootstrap_token or load_or_create_secret(data_dir / "bootstrap_token",
                                                                            "bootstrap")
        if settings.uses_embedded_broker:
            embedded = EmbeddedBroker(settings.embedded_mqtt_host, settings.embedded_mqtt_port)
            address = embedded.start()
        else:
            address = parse_mqtt_url(settings.mqtt_url)
        bridge = MqttBridge(address, engine, shared_subscription=settings.mqtt_shared_subscription
                            and embedded is None)
        publisher = DirectivePublisher(bridge, engine, settings.publish_timeout_s,
                                       restore_retained=embedded is not None)
        bridge.start()
    except BaseException:
        if bridge is not None:
            bridge.stop()
        if embedded is not None:
            embedded.stop()
        engine.dispose()
        raise
    logger.info("server event=started data_dir=%s database=%s mqtt=%s embedded_broker=%s", data_dir,
                engine.url.render_as_string(hide_password=True), address.url, embedded is not None)
    return ServerRuntime(settings, engine, keyring, artifacts, admin_token, bootstrap_token, address, bridge,
                         publisher, embedded)
