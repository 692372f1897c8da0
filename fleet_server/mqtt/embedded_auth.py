"""Authentication plugin of the embedded amqtt broker.

Open access for now (a later issue checks device credentials and topic ACLs),
but unlike amqtt's ``AnonymousAuthPlugin`` it marks only clients without a
username as anonymous: amqtt keeps no persistent session (queued QoS 1
messages while offline) for anonymous clients, and devices rely on that.
"""

from dataclasses import dataclass

from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session


class OpenAccessAuthPlugin(BaseAuthPlugin):
    async def authenticate(self, *, session: Session) -> bool:
        session.is_anonymous = not session.username
        return True

    @dataclass
    class Config:
        """No options."""
