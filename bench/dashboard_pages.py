"""Dashboard page latency at fleet sizes: synthetic devices inserted into a fresh
server's database (SQLite, or PostgreSQL with --database-url), pages fetched
in-process through the ASGI app (no network), median of several requests.

    .venv/bin/python bench/dashboard_pages.py                      # 1,000 and 10,000 devices
    .venv/bin/python bench/dashboard_pages.py --devices 1000 5000 --repeat 9

Prints one JSON object: {"runs": [{"devices", "backend", "pages": {page: median_ms}}]}.
"""

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Run as a script, this file's directory comes first on sys.path; the repository root is what we need.
ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [entry for entry in sys.path if Path(entry or ".").resolve() != ROOT / "bench"]

PAGES = {
    "overview": "/ui/",
    "devices_page_1": "/ui/devices",
    "devices_last_page": "/ui/devices?page=100000",
    "devices_filtered": "/ui/devices?model=digits:2&online=online&tag=site-3",
    "devices_search": "/ui/devices?q=00042",
    "device_detail": "/ui/devices/pi-00500",
    "api_devices_limit_100": "/api/v1/devices?limit=100",
}


def measure(devices: int, repeat: int, database_url: str | None) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from fleet_server.app import create_app
    from fleet_server.core.config import Settings
    from tests.fleet_server.synthetic_fleet import insert_devices

    token = "bench-admin-token-" + "x" * 24
    with tempfile.TemporaryDirectory(prefix="edgefleet-bench-") as directory:
        settings = Settings(data_dir=Path(directory), admin_token=token, bootstrap_token="bench-bootstrap-" + "y" * 24,
                            embedded_mqtt_port=0, **({"database_url": database_url} if database_url else {}))
        with TestClient(create_app(settings)) as client:
            started = time.perf_counter()
            insert_devices(client.app.state.runtime.engine, devices)  # type: ignore[attr-defined]
            insert_s = time.perf_counter() - started
            assert client.post("/ui/login", data={"token": token}, follow_redirects=False).status_code == 303
            pages: dict[str, float] = {}
            for name, path in PAGES.items():
                headers = {"Authorization": f"Bearer {token}"} if path.startswith("/api/") else {}
                client.get(path, headers=headers)  # warm-up
                samples = []
                for _ in range(repeat):
                    started = time.perf_counter()
                    response = client.get(path, headers=headers)
                    samples.append((time.perf_counter() - started) * 1000)
                    assert response.status_code == 200, (path, response.status_code)
                pages[name] = round(statistics.median(samples), 1)
            backend = client.app.state.runtime.engine.dialect.name  # type: ignore[attr-defined]
    return {"devices": devices, "backend": backend, "insert_s": round(insert_s, 2), "median_of": repeat,
            "pages_ms": pages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--database-url", default=None, help="an empty PostgreSQL database (default: SQLite)")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    runs = [measure(count, args.repeat, args.database_url) for count in args.devices]
    print(json.dumps({"runs": runs}, indent=2))


if __name__ == "__main__":
    main()
