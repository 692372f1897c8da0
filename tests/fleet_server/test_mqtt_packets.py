"""The consumer's MQTT 3.1.1 codec: remaining lengths, packet splitting, PUBLISH decoding."""

import pytest

from fleet_server.mqtt import packets
from fleet_server.mqtt.packets import MqttProtocolError, PacketTooLargeError, split_packets

LIMIT = 1 << 20


def publish(topic: str, payload: bytes, packet_id: int | None = 7, dup: bool = False) -> bytes:
    """A PUBLISH as a broker sends it (QoS 1 when ``packet_id`` is set, else QoS 0)."""
    first = packets.PUBLISH | (0x02 if packet_id is not None else 0) | (0x08 if dup else 0)
    body = len(topic).to_bytes(2, "big") + topic.encode()
    if packet_id is not None:
        body += packet_id.to_bytes(2, "big")
    body += payload
    return bytes((first,)) + packets.encode_remaining_length(len(body)) + body


def decode_length(encoded: bytes) -> int:
    """The body length a fixed header announces, as the splitter reads it."""
    found, used, needed = split_packets(b"\x30" + encoded, packets.MAX_REMAINING_LENGTH)
    assert (found, used) == ([], 0)
    return needed - 1 - len(encoded)


@pytest.mark.parametrize(("length", "encoded"), [
    (0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"), (16_383, b"\xff\x7f"), (16_384, b"\x80\x80\x01"),
    (2_097_151, b"\xff\xff\x7f"), (2_097_152, b"\x80\x80\x80\x01"), (268_435_455, b"\xff\xff\xff\x7f"),
])
def test_remaining_length_boundaries(length: int, encoded: bytes) -> None:
    assert packets.encode_remaining_length(length) == encoded
    if length:
        assert decode_length(encoded) == length


def test_remaining_length_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError):
        packets.encode_remaining_length(268_435_456)


def test_a_fifth_length_byte_is_a_protocol_error() -> None:
    with pytest.raises(MqttProtocolError):
        split_packets(b"\x30\xff\xff\xff\xff\x01", LIMIT)


def test_a_declared_length_above_the_guard_is_refused() -> None:
    with pytest.raises(PacketTooLargeError):
        split_packets(b"\x30" + packets.encode_remaining_length(LIMIT + 1), LIMIT)


def test_several_packets_in_one_chunk() -> None:
    stream = publish("a/b", b"one") + b"\xd0\x00" + publish("c", b"", packet_id=None) + publish("d", b"x" * 300)
    found, used, needed = split_packets(stream, LIMIT)
    assert (used, needed) == (len(stream), 0)
    assert [first & 0xF0 for first, _ in found] == [packets.PUBLISH, packets.PINGRESP, packets.PUBLISH,
                                                     packets.PUBLISH]
    decoded = [packets.decode_publish(first, body) for first, body in found if first & 0xF0 == packets.PUBLISH]
    assert decoded == [(b"a/b", 7, b"one"), (b"c", None, b""), (b"d", 7, b"x" * 300)]


def test_a_stream_split_at_every_byte_yields_the_same_packets() -> None:
    stream = publish("dev/1/telemetry", b"p" * 200, packet_id=65535, dup=True) + b"\x90\x03\x00\x01\x01" + \
        publish("t", b"q", packet_id=None)
    expected = [(first, bytes(body)) for first, body in split_packets(stream, LIMIT)[0]]
    assert len(expected) == 3
    for cut in range(len(stream) + 1):
        found, used, needed = split_packets(stream[:cut], LIMIT)
        rest = stream[:cut][used:] + stream[cut:]
        assert (needed == 0) == (used == cut) and (needed == 0 or needed > cut - used)  # more bytes needed
        more, used_more, needed_more = split_packets(rest, LIMIT)
        got = [(first, bytes(body)) for first, body in found + more]
        assert got == expected, f"split at byte {cut}"
        assert (used_more, needed_more) == (len(rest), 0)


def test_needed_tells_the_full_size_of_an_incomplete_packet() -> None:
    big = publish("t", b"z" * 100_000)
    found, used, needed = split_packets(big[:1000], LIMIT)
    assert (found, used, needed) == ([], 0, len(big))


def test_publish_flags_and_malformed_bodies() -> None:
    first, body = split_packets(publish("x", b"y", dup=True), LIMIT)[0][0]
    assert first & 0x08  # DUP
    with pytest.raises(MqttProtocolError):
        packets.decode_publish(0x32, memoryview(b"\x00\x09abc"))  # topic longer than the packet
    with pytest.raises(MqttProtocolError):
        packets.decode_publish(0x34, memoryview(b"\x00\x01a\x00\x01"))  # QoS 2
    with pytest.raises(MqttProtocolError):
        packets.decode_publish(0x30, memoryview(b"\x00"))


def test_encoders_match_the_protocol() -> None:
    assert packets.puback_packet(0x1234) == b"\x40\x02\x12\x34"
    connect = packets.connect_packet("cid", clean_session=False, keepalive=30, username="u", password="p")
    assert connect == b"\x10\x15\x00\x04MQTT\x04\xc0\x00\x1e\x00\x03cid\x00\x01u\x00\x01p"
    assert packets.connect_packet("c", True, 60)[9] == 0x02  # clean session, no credentials
    assert packets.subscribe_packet(1, [("a/#", 1)]) == b"\x82\x08\x00\x01\x00\x03a/#\x01"
    assert packets.unsubscribe_packet(2, ["a/#"]) == b"\xa2\x07\x00\x02\x00\x03a/#"


def test_the_buffer_reassembles_packets_from_any_chunking() -> None:
    big = publish("big", b"b" * 300_000)
    stream = publish("a", b"1") + big + publish("c", b"3", packet_id=None)
    for size in (1, 7, 65_536, len(stream)):
        buffer = packets.PacketBuffer(LIMIT)
        found = []
        for start in range(0, len(stream), size):
            found += [packets.decode_publish(first, body) for first, body in buffer.feed([stream[start:start + size]])]
        assert found == [(b"a", 7, b"1"), (b"big", 7, b"b" * 300_000), (b"c", None, b"3")], f"chunks of {size}"
    with pytest.raises(PacketTooLargeError):
        packets.PacketBuffer(1000).feed([big[:10]])
