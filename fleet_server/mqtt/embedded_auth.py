"""Authentication and topic ACL plugins of the embedded amqtt broker.

With an ``authenticator`` (what the server runs): a device connects with
username = its device id, password = its credential and client id = its
device id; the server's bridge with username ``edgefleet.server`` and a secret
generated per process. Unknown, revoked or mismatching clients are refused,
and so is a last will on a topic the client may not publish to. Every
publish, subscribe and delivery then goes through ``fleet_server.mqtt.acl``,
the same rules the generated Mosquitto ACL applies.

Without one (``EmbeddedBroker`` in tests or embedded elsewhere) access is open;
only clients without a username are anonymous (amqtt keeps no persistent
session for anonymous clients, and devices rely on it).
"""

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session as MqttSession
from sqlalchemy import Engine
from sqlmodel import Session

from fleet_server.core.security import tokens_equal
from fleet_server.mqtt.acl import SERVER_IDENTITY, Access, allowed
from fleet_server.services import devices

logger = logging.getLogger(__name__)

ACCESS_FOR_ACTION = {Action.PUBLISH: Access.PUBLISH, Action.SUBSCRIBE: Access.SUBSCRIBE,
                     Action.RECEIVE: Access.RECEIVE}


class BrokerAuthenticator:
    """Checks MQTT credentials against the database (devices) and the server's per-process secret."""

    def __init__(self, engine: Engine, server_secret: str) -> None:
        self.engine = engine
        self.server_secret = server_secret

    def identify(self, username: str | None, password: str | None) -> str | None:
        """The identity these credentials prove, or None."""
        if not username or not password:
            return None
        if username == SERVER_IDENTITY:
            return SERVER_IDENTITY if tokens_equal(password, self.server_secret) else None
        with Session(self.engine) as session:
            device = devices.authenticate_device(session, password)
        return username if device is not None and device.device_id == username else None


class OpenAccessAuthPlugin(BaseAuthPlugin):
    async def authenticate(self, *, session: MqttSession) -> bool:
        session.is_anonymous = not session.username
        return True

    @dataclass
    class Config:
        """No options."""


class FleetAuthPlugin(BaseAuthPlugin):
    @dataclass
    class Config:
        authenticator: Any = None  # a BrokerAuthenticator

    async def authenticate(self, *, session: MqttSession) -> bool:
        authenticator: BrokerAuthenticator = self.config.authenticator
        try:
            identity = await asyncio.to_thread(authenticator.identify, session.username, session.password)
        except Exception:
            logger.exception("server event=mqtt_auth_failed client_id=%s", session.client_id)
            return False
        reason = None
        if identity is None:
            reason = "bad_credentials"
        elif identity != SERVER_IDENTITY and session.client_id != identity:
            reason = "client_id_mismatch"  # a device may not take over another client's session
        elif session.will_flag and not allowed(identity, Access.PUBLISH, session.will_topic):
            reason = "will_topic_denied"
        if reason is not None:
            logger.warning("server event=mqtt_connect_refused client_id=%r username=%r reason=%s",
                           str(session.client_id)[:64], str(session.username)[:64], reason)
            return False
        session.is_anonymous = False
        return True


class FleetTopicPlugin(BaseTopicPlugin):
    @dataclass
    class Config:
        """No options: the rules are ``fleet_server.mqtt.acl``."""

    async def topic_filtering(self, *, session: MqttSession | None = None, topic: str | None = None,
                              action: Action | None = None) -> bool:
        access = ACCESS_FOR_ACTION.get(action) if action is not None else None
        permitted = access is not None and allowed(session.username if session else None, access, topic)
        if not permitted and access is not Access.RECEIVE:
            logger.warning("server event=mqtt_acl_denied username=%r action=%s topic=%r",
                           str(session.username if session else None)[:64], action, str(topic)[:200])
        return permitted


def plugin_config(authenticator: BrokerAuthenticator | None) -> dict[str, dict[str, Any]]:
    """The ``plugins`` section of the amqtt broker config."""
    if authenticator is None:
        return {f"{__name__}.OpenAccessAuthPlugin": {}}
    return {f"{__name__}.FleetAuthPlugin": {"authenticator": authenticator}, f"{__name__}.FleetTopicPlugin": {}}
