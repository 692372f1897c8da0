"""A small HTTP/1.1 load generator for Range downloads (used by bench/artifact_serving.py).

Keep-alive connections on asyncio streams, each in a loop: pick one of the URLs and a
random start offset, send ``GET`` with ``Range: bytes=<start>-`` (what a resuming agent
sends; ``--range-bytes N`` asks for N bytes instead), read the 206 body and discard it.
Runs for ``--seconds`` after a short warm-up and prints one JSON object:
{"requests", "bytes", "seconds", "mb_per_s", "requests_per_s", "errors"}.

    .venv/bin/python bench/http_load.py --url http://127.0.0.1:8000/api/v1/artifacts/<sha> \\
        --size 8388608 --header "Authorization: Bearer ..." --connections 16 --seconds 10
"""

import argparse
import asyncio
import json
import random
import time
from urllib.parse import urlsplit

MB = 1_000_000


class Totals:
    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        self.errors = 0
        self.counting = False


async def read_response(reader: asyncio.StreamReader) -> tuple[int, int]:
    """Status and body length of one response (the body is read and dropped)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    remaining = length
    while remaining:
        chunk = await reader.read(min(remaining, 1 << 20))
        if not chunk:
            raise ConnectionError("connection closed mid-body")
        remaining -= len(chunk)
    return status, length


async def connection_loop(urls: list[str], size: int, range_bytes: int, headers: list[str], deadline: float,
                          totals: Totals, seed: int) -> None:
    rng = random.Random(seed)
    parts = urlsplit(urls[0])
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    extra = "".join(f"{header}\r\n" for header in headers)
    try:
        while time.monotonic() < deadline:
            path = urlsplit(rng.choice(urls)).path
            if range_bytes:
                start = rng.randrange(0, max(1, size - range_bytes))
                last, expected = str(start + range_bytes - 1), range_bytes
            else:
                start = rng.randrange(0, size)
                last, expected = "", size - start
            request = (f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nRange: bytes={start}-{last}"
                       f"\r\nAccept-Encoding: identity\r\n{extra}\r\n")
            writer.write(request.encode("latin-1"))
            status, length = await read_response(reader)
            if totals.counting:
                if status == 206 and length == expected:
                    totals.requests += 1
                    totals.bytes += length
                else:
                    totals.errors += 1
    finally:
        writer.close()


async def run(urls: list[str], size: int, range_bytes: int, headers: list[str], connections: int,
              seconds: float, warmup: float) -> dict[str, float]:
    totals = Totals()
    deadline = time.monotonic() + warmup + seconds
    tasks = [asyncio.create_task(connection_loop(urls, size, range_bytes, headers, deadline, totals, number))
             for number in range(connections)]
    await asyncio.sleep(warmup)
    totals.counting = True
    started = time.monotonic()
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - started
    return {"requests": totals.requests, "bytes": totals.bytes, "seconds": round(elapsed, 2),
            "mb_per_s": round(totals.bytes / MB / elapsed, 1), "requests_per_s": round(totals.requests / elapsed, 1),
            "errors": totals.errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", action="append", required=True, help="repeat for several files of one host")
    parser.add_argument("--size", type=int, required=True, help="size of every file, bytes")
    parser.add_argument("--range-bytes", type=int, default=0, help="0: from a random offset to the end")
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args()
    result = asyncio.run(run(args.url, args.size, args.range_bytes, args.header, args.connections, args.seconds,
                             args.warmup))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
