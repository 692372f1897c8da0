"""Telemetry wire formats side by side: spec version 1 (zlib'd canonical JSON) against version 2 (binary).

The windows are ``bench/ingest.py``'s (20 features on a 12-bin profile, a 2-class prediction histogram;
``ingest_load.encoded_windows``), each encoded both ways. Per window and format: the payload size and the
CPU time of ``TelemetryWindow.decode`` (inflate, parse, validate, build the objects) and of ``encode``;
timed over every window, the minimum of ``--repeats`` rounds (the cases interleaved in each). Prints one JSON object.

    .venv/bin/python bench/telemetry_wire.py [--windows 500] [--repeats 30]
"""

import argparse
import json
import statistics
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.protocol.telemetry import TelemetryWindow  # noqa: E402
from agent.protocol.telemetry_wire import V2_PREFIX, decode_body, encode_v1, inflate  # noqa: E402
from bench.ingest_load import encoded_windows  # noqa: E402


def per_item_us(cases: dict[str, tuple[Callable[[Any], object], Sequence[Any]]], repeats: int) -> dict[str, float]:
    """Per case, the minimum over ``repeats`` rounds of the mean time per item in microseconds; every round
    times the cases one after the other, so a busy neighbour on this shared machine slows all of them alike."""
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(repeats):
        for name, (function, items) in cases.items():
            started = time.perf_counter()
            for item in items:
                function(item)
            best[name] = min(best[name], (time.perf_counter() - started) / len(items))
    return {name: round(1e6 * seconds, 2) for name, seconds in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    v2 = [payload for _, payload in encoded_windows(args.windows, max(1, args.windows // 10))]
    windows = [TelemetryWindow.decode(payload) for payload in v2]
    v1 = [encode_v1(window) for window in windows]
    if not all(payload.startswith(V2_PREFIX) for payload in v2) or any(
            TelemetryWindow.decode(old) != window for old, window in zip(v1, windows, strict=True)):
        raise SystemExit("the two encodings do not carry the same windows")
    bodies = [inflate(payload[len(V2_PREFIX):]) for payload in v2]
    result = {
        "windows": args.windows,
        "features": len(windows[0].features.counts) if windows[0].features else 0,
        "v1_bytes_median": statistics.median(map(len, v1)),
        "v2_bytes_median": statistics.median(map(len, v2)),
        "v1_inflated_bytes_median": statistics.median(len(zlib.decompress(p)) for p in v1),
        "v2_inflated_bytes_median": statistics.median(map(len, bodies)),
    }
    result.update(per_item_us({
        "v1_decode_us_per_window": (TelemetryWindow.decode, v1),
        "v2_decode_us_per_window": (TelemetryWindow.decode, v2),
        "v2_inflate_us_per_window": (lambda p: inflate(p[len(V2_PREFIX):]), v2),
        "v2_parse_validate_us_per_window": (decode_body, bodies),
        "v1_encode_us_per_window": (encode_v1, windows),
        "v2_encode_us_per_window": (TelemetryWindow.encode, windows),
    }, args.repeats))
    result["decode_speedup"] = round(result["v1_decode_us_per_window"] / result["v2_decode_us_per_window"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
