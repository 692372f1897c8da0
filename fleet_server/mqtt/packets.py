"""MQTT 3.1.1 packet codec for the server's consumer connection (``fleet_server.mqtt.consumer``).

Pure functions, no I/O: encoders for what a subscriber sends (CONNECT, SUBSCRIBE,
UNSUBSCRIBE, PUBACK, PINGREQ, DISCONNECT) and ``split_packets``, which cuts every
complete packet out of a receive buffer in one loop (fixed header, remaining-length
varint) and reports how many bytes the next, incomplete one still needs.
"""

import struct

from fleet_server.errors import MqttError

CONNECT, CONNACK, PUBLISH, PUBACK = 0x10, 0x20, 0x30, 0x40
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK = 0x80, 0x90, 0xA0, 0xB0
PINGREQ, PINGRESP, DISCONNECT = 0xC0, 0xD0, 0xE0

PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"
MAX_REMAINING_LENGTH = 268_435_455  # four varint bytes, the protocol's limit
CONNACK_REASONS = {
    1: "unacceptable protocol version", 2: "identifier rejected", 3: "server unavailable",
    4: "bad user name or password", 5: "not authorized",
}

_PUBACK = struct.Struct("!BBH")
_UINT16 = struct.Struct("!H")


class MqttProtocolError(MqttError):
    """The broker sent bytes that are not a valid MQTT 3.1.1 packet."""


class PacketTooLargeError(MqttProtocolError):
    """A packet declares a remaining length above the connection's memory guard."""


def encode_remaining_length(length: int) -> bytes:
    if not 0 <= length <= MAX_REMAINING_LENGTH:
        raise ValueError(f"remaining length {length} out of range")
    out = bytearray()
    while True:
        byte, length = length % 128, length // 128
        out.append(byte | 0x80 if length else byte)
        if not length:
            return bytes(out)


def _string(value: str | bytes) -> bytes:
    data = value.encode("utf-8") if isinstance(value, str) else value
    if len(data) > 0xFFFF:
        raise ValueError("MQTT string longer than 65535 bytes")
    return _UINT16.pack(len(data)) + data


def _packet(first_byte: int, body: bytes) -> bytes:
    return bytes((first_byte,)) + encode_remaining_length(len(body)) + body


def connect_packet(client_id: str, clean_session: bool, keepalive: int, username: str | None = None,
                   password: str | None = None) -> bytes:
    flags = 0x02 if clean_session else 0
    if username is not None:
        flags |= 0x80
        if password is not None:
            flags |= 0x40
    body = _string("MQTT") + bytes((4, flags)) + _UINT16.pack(keepalive) + _string(client_id)
    if username is not None:
        body += _string(username)
        if password is not None:
            body += _string(password)
    return _packet(CONNECT, body)


def subscribe_packet(packet_id: int, filters: list[tuple[str, int]]) -> bytes:
    body = _UINT16.pack(packet_id) + b"".join(_string(topic) + bytes((qos,)) for topic, qos in filters)
    return _packet(SUBSCRIBE | 0x02, body)


def unsubscribe_packet(packet_id: int, filters: list[str]) -> bytes:
    return _packet(UNSUBSCRIBE | 0x02, _UINT16.pack(packet_id) + b"".join(_string(topic) for topic in filters))


def puback_packet(packet_id: int) -> bytes:
    return _PUBACK.pack(PUBACK, 2, packet_id)


def split_packets(data: bytes, max_remaining: int) -> tuple[list[tuple[int, memoryview]], int, int]:
    """Every complete packet at the start of ``data`` as (first byte, body), the number of bytes they
    take, and how many bytes the unconsumed rest must reach before the next packet can be complete
    (0: all consumed). Raises ``PacketTooLargeError`` for a declared length above ``max_remaining`` and
    ``MqttProtocolError`` for a remaining length longer than four bytes."""
    view = memoryview(data)
    packets: list[tuple[int, memoryview]] = []
    end = len(data)
    pos = 0
    while pos < end:
        if pos + 1 < end and data[pos + 1] < 0x80:  # the common case: a one-byte remaining length
            length, body = data[pos + 1], pos + 2
        else:
            length, multiplier, index = 0, 1, pos + 1
            while True:
                if index >= end:
                    return packets, pos, end + 1 - pos  # the length itself is incomplete
                byte = data[index]
                length += (byte & 0x7F) * multiplier
                index += 1
                if byte < 0x80:
                    break
                if index - pos > 4:
                    raise MqttProtocolError("remaining length longer than four bytes")
                multiplier *= 128
            body = index
        if length > max_remaining:
            raise PacketTooLargeError(f"packet declares {length} bytes, the limit is {max_remaining}")
        stop = body + length
        if stop > end:
            return packets, pos, stop - pos
        packets.append((data[pos], view[body:stop]))
        pos = stop
    return packets, pos, 0


class PacketBuffer:
    """Received bytes not yet cut into packets. Chunks of a large packet are kept in a list and joined
    once it is complete, not copied on every read."""

    def __init__(self, max_remaining: int) -> None:
        self.max_remaining = max_remaining
        self._chunks: list[bytes] = []
        self._size = 0
        self._needed = 1

    def feed(self, chunks: list[bytes]) -> list[tuple[int, memoryview]]:
        """Add ``chunks``; every packet now complete, as (first byte, body)."""
        self._chunks.extend(chunks)
        self._size += sum(len(chunk) for chunk in chunks)
        if self._size < self._needed:
            return []
        data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        found, used, self._needed = split_packets(data, self.max_remaining)
        rest = data[used:] if used < len(data) else b""
        self._chunks, self._size = ([rest], len(rest)) if rest else ([], 0)
        return found


def decode_publish(first_byte: int, body: memoryview) -> tuple[bytes, int | None, bytes]:
    """(topic bytes, packet id or None for QoS 0, payload) of a PUBLISH body."""
    if len(body) < 2:
        raise MqttProtocolError("PUBLISH too short for its topic length")
    topic_end = 2 + _UINT16.unpack_from(body)[0]
    qos = (first_byte >> 1) & 0x03
    if qos == 0:
        if topic_end > len(body):
            raise MqttProtocolError("PUBLISH topic longer than the packet")
        return bytes(body[2:topic_end]), None, bytes(body[topic_end:])
    if qos != 1:
        raise MqttProtocolError(f"PUBLISH with QoS {qos} on a QoS 1 subscription")
    if topic_end + 2 > len(body):
        raise MqttProtocolError("PUBLISH topic longer than the packet")
    return bytes(body[2:topic_end]), _UINT16.unpack_from(body, topic_end)[0], bytes(body[topic_end + 2:])


def packet_id_of(body: memoryview) -> int:
    """The packet identifier a SUBACK or UNSUBACK starts with."""
    if len(body) < 2:
        raise MqttProtocolError("acknowledgement without a packet identifier")
    return _UINT16.unpack_from(body)[0]
