"""Range header parsing (RFC 9110 single byte ranges)."""

import pytest

from fleet_server.errors import RangeNotSatisfiableError
from fleet_server.services.byte_ranges import ByteRange, parse_range


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-0", ByteRange(0, 0)),
        ("bytes=0-99", ByteRange(0, 99)),
        ("bytes=10-", ByteRange(10, 99)),
        ("bytes=-10", ByteRange(90, 99)),
        ("bytes=-500", ByteRange(0, 99)),
        ("bytes=50-5000", ByteRange(50, 99)),
        (None, None),
        ("bytes=5-1", None),
        ("bytes=0-1,5-6", None),
        ("lines=1-2", None),
        ("bytes=-", None),
    ],
)
def test_parse(header: str | None, expected: ByteRange | None) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=100-200", "bytes=-0"])
def test_unsatisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiableError) as caught:
        parse_range(header, 100)
    assert caught.value.size == 100


def test_content_range() -> None:
    assert ByteRange(90, 99).content_range(100) == "bytes 90-99/100"
    assert ByteRange(90, 99).length == 10
