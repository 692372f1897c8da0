"""HTTP ``Range`` handling for artifact downloads (RFC 9110 section 14).

One range per request is served (``bytes=a-b``, ``bytes=a-``, ``bytes=-n``);
a header that is not a single byte range is ignored (the whole file is
sent), as the RFC allows; a syntactically valid range that does not overlap
the file is unsatisfiable (416).
"""

import re
from dataclasses import dataclass

from fleet_server.errors import RangeNotSatisfiableError

_SINGLE_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The requested range of a ``size``-byte file, or None for the whole file."""
    if header is None:
        return None
    match = _SINGLE_RANGE.fullmatch(header.strip().replace(" ", ""))
    if match is None or (not match.group(1) and not match.group(2)):
        return None
    first, last = match.group(1), match.group(2)
    if not first:  # suffix range: the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiableError(f"range {header!r} selects no bytes of a {size}-byte file", size)
        return ByteRange(max(0, size - suffix), size - 1)
    start = int(first)
    if last and int(last) < start:
        return None  # invalid syntax per RFC: ignore the header
    if start >= size:
        raise RangeNotSatisfiableError(f"range {header!r} starts beyond the {size}-byte file", size)
    end = int(last) if last else size - 1
    return ByteRange(start, min(end, size - 1))
