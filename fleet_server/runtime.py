"""Everything the running server holds: database engine, keyring, artifact
store, secrets, the embedded broker and the MQTT bridge; started and stopped
in order by the app's lifespan."""

import logging
from dataclasses import dataclass, field, replace

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from agent.storage import fsync_directory
from fleet_server.core.config import Settings
from fleet_server.core.db import create_db_engine
from fleet_server.core.identity import server_identity
from fleet_server.core.schema import upgrade_schema
from fleet_server.core.security import load_or_create_secret, new_token
from fleet_server.errors import DatabaseUnavailableError
from fleet_server.keyring import ROOT_FILE, Keyring, init_keyring, load_keyring
from fleet_server.mqtt.acl import SERVER_IDENTITY
from fleet_server.mqtt.bridge import MqttBridge
from fleet_server.mqtt.broker_url import BrokerAddress, parse_mqtt_url
from fleet_server.mqtt.directive_publisher import DirectivePublisher
from fleet_server.mqtt.embedded_auth import BrokerAuthenticator
from fleet_server.mqtt.embedded_broker import EmbeddedBroker
from fleet_server.mqtt.replica_registry import ReplicaRegistry
from fleet_server.pki import CA_DIR, FleetCA, open_ca
from fleet_server.rollouts.controller import ControllerSettings, RolloutController
from fleet_server.services import certificates, root_history
from fleet_server.services.artifact_store import ArtifactStore
from fleet_server.telemetry_runtime import Monitor, build_telemetry

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
    ca: FleetCA | None = None  # the fleet CA: device certificates, CRL
    rollouts: RolloutController | None = None  # drives staged rollouts (while this replica holds the lease)
    monitor: Monitor | None = None  # drift, latency, error-rate and offline alerts
    replicas: ReplicaRegistry | None = None  # heartbeat; drains dead replicas' MQTT sessions (external broker)
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
        if self.rollouts is not None:
            self.rollouts.stop()
        if self.monitor is not None:
            self.monitor.stop()
        if self.replicas is not None:
            self.replicas.stop()
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


def record_key_state(engine: Engine, keyring: Keyring, ca: FleetCA) -> None:
    """Record the key directory's roots (audited when new) and rewrite the CRL from the database."""
    with Session(engine, expire_on_commit=False) as session:
        root_history.record(session, root_history.keyring_roots(keyring))
        certificates.write_crl(session, ca)


def broker_tls_identity(address: BrokerAddress, settings: Settings, ca: FleetCA) -> BrokerAddress:
    """An mqtts:// broker: verify it with the fleet CA (or EDGEFLEET_MQTT_CA_FILE), log in with a client cert."""
    if settings.mqtt_cert_file is not None:
        cert, key = settings.mqtt_cert_file, settings.mqtt_key_file or settings.mqtt_cert_file
    else:
        cert, key = ca.ensure_server_identity()
    return replace(address, ca_file=str(settings.mqtt_ca_file or ca.cert_path), cert_file=str(cert),
                   key_file=str(key))


def start_runtime(settings: Settings) -> ServerRuntime:
    """Prepare storage and schema, load keys, start the broker (if embedded) and the bridge."""
    data_dir = settings.resolved_data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    fsync_directory(data_dir)
    server_id = server_identity(data_dir)
    engine = create_db_engine(settings.resolved_database_url)
    embedded: EmbeddedBroker | None = None
    bridge: MqttBridge | None = None
    controller: RolloutController | None = None
    replicas: ReplicaRegistry | None = None
    try:
        try:
            upgrade_schema(engine)
        except OperationalError as exc:
            raise DatabaseUnavailableError(f"cannot open or migrate the database "
                                           f"{engine.url.render_as_string(hide_password=True)}: "
                                           f"{str(exc.orig or exc).strip()}") from None
        keyring = open_keyring(settings)
        ca = open_ca(settings.resolved_key_dir / CA_DIR)
        record_key_state(engine, keyring, ca)
        artifacts = ArtifactStore(settings.resolved_artifact_dir)
        artifacts.prepare()
        admin_token = settings.admin_token or load_or_create_secret(data_dir / "admin_token", "admin")
        bootstrap_token = settings.bootstrap_token
        if bootstrap_token:
            logger.warning("server event=provisioning_token_enabled detail='EDGEFLEET_BOOTSTRAP_TOKEN enrolls any "
                           "number of devices and never expires: for development and demos only'")
        if settings.uses_embedded_broker:
            server_secret = new_token()
            embedded = EmbeddedBroker(settings.embedded_mqtt_host, settings.embedded_mqtt_port,
                                      BrokerAuthenticator(engine, server_secret))
            address = replace(embedded.start(), username=SERVER_IDENTITY, password=server_secret)
        else:
            address = parse_mqtt_url(settings.mqtt_url)
            if address.tls:
                address = broker_tls_identity(address, settings, ca)
        ingestor, monitor = build_telemetry(settings, engine, artifacts)
        bridge = MqttBridge(address, engine, shared_subscription=settings.mqtt_shared_subscription
                            and embedded is None, telemetry=ingestor,
                            client_id=None if embedded else f"edgefleet-server-{server_id}",
                            persistent_session=embedded is None)
        publisher = DirectivePublisher(bridge, engine, settings.publish_timeout_s,
                                       restore_retained=embedded is not None)
        bridge.start()
        monitor.start()
        controller = RolloutController(engine, keyring, publisher, server_id, ControllerSettings(
            settings.rollout_tick_s, settings.rollout_lease_ttl_s, settings.rollout_health_interval_s))
        controller.start()
        if bridge.persistent_session and bridge.shared_subscription:
            replicas = ReplicaRegistry(engine, bridge, server_id, settings.replica_heartbeat_s,
                                       settings.replica_stale_s)
            replicas.start()
    except BaseException:
        if replicas is not None:
            replicas.stop()
        if controller is not None:
            controller.stop()
        if bridge is not None:
            bridge.stop()
        if embedded is not None:
            embedded.stop()
        engine.dispose()
        raise
    logger.info("server event=started data_dir=%s database=%s mqtt=%s embedded_broker=%s", data_dir,
                engine.url.render_as_string(hide_password=True), address.url, embedded is not None)
    return ServerRuntime(settings, engine, keyring, artifacts, admin_token, bootstrap_token, address, bridge,
                         publisher, embedded, ca, monitor=monitor, rollouts=controller, replicas=replicas)
