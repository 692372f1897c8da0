"""Operator HTTP client for the fleet server's REST API (used by the CLI and the demo)."""

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from fleet_server.errors import FleetServerError

FINAL_DEVICE_STATES = frozenset({"succeeded", "failed", "rolled_back", "rejected"})


class FleetClientError(FleetServerError):
    """The server refused a request or could not be reached."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class FleetServerUnreachableError(FleetClientError):
    """No HTTP answer from the server (down, wrong address, timeout) or an answer that is not the API's."""


class FleetClient:
    def __init__(self, base_url: str, token: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "FleetClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._decode(self._send(method, path, **kwargs), method, path)

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The 2xx response; ``FleetClientError`` for an error status, unreachable for no answer."""
        try:
            response = self._http.request(method, f"/api/v1{path}", **kwargs)
        except httpx.HTTPError as exc:
            raise FleetServerUnreachableError(f"cannot reach the fleet server at {self.base_url}: {exc}") from exc
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except (ValueError, AttributeError):
                detail = response.text
            raise FleetClientError(f"{method} {path} -> {response.status_code}: {detail}", response.status_code)
        return response

    def _decode(self, response: httpx.Response, method: str, path: str) -> Any:
        try:
            return response.json() if response.content else None
        except ValueError:
            raise FleetServerUnreachableError(f"{self.base_url} answered {method} {path} with something that is "
                                              "not JSON: is it an EdgeFleet server?") from None

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/health")

    def upload_model(
        self, path: Path, name: str, metadata: dict[str, Any] | None = None, precision: str = "fp32",
        calibration: Path | None = None,
    ) -> dict[str, Any]:
        """Upload a model version; with ``calibration`` (.npz/.npy/CSV) the server builds its reference profile."""
        with contextlib.ExitStack() as stack:
            files = {"file": (Path(path).name, stack.enter_context(open(path, "rb")), "application/octet-stream")}
            if calibration is not None:
                files["calibration"] = (Path(calibration).name, stack.enter_context(open(calibration, "rb")),
                                        "application/octet-stream")
            return self._request(
                "POST",
                "/models",
                files=files,
                data={"name": name, "metadata": json.dumps(metadata or {}), "precision": precision},
            )

    def create_release(self, model: str, version: int) -> dict[str, Any]:
        return self._request("POST", "/releases", json={"model": model, "version": version})

    def deploy(
        self, model: str, version: int, device_ids: list[str] | None = None, tags: list[str] | None = None
    ) -> dict[str, Any]:
        body = {"release": {"name": model, "version": version}, "device_ids": device_ids or [], "tags": tags or []}
        return self._request("POST", "/deployments", json=body)

    def deployment(self, deployment_id: int) -> dict[str, Any]:
        return self._request("GET", f"/deployments/{deployment_id}")

    def deployments(self, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        return self._request("GET", "/deployments", params={"limit": limit, "offset": offset})

    def devices(self) -> list[dict[str, Any]]:
        return self._request("GET", "/devices")

    def device(self, device_id: str) -> dict[str, Any]:
        return self._request("GET", f"/devices/{device_id}")

    def wait_for_deployment(
        self, deployment_id: int, timeout: float = 120.0, interval: float = 0.5
    ) -> dict[str, Any]:
        """Poll until every device of the deployment reached a final state."""
        deadline = time.monotonic() + timeout
        while True:
            deployment = self.deployment(deployment_id)
            states = [target["state"] for target in deployment["targets"]]
            if all(state in FINAL_DEVICE_STATES for state in states):
                return deployment
            if time.monotonic() > deadline:
                raise FleetClientError(f"deployment {deployment_id} not finished after {timeout:.0f}s: {states}")
            time.sleep(interval)

    # -- registry, releases and devices (the operator CLI's read and admin commands) --

    def models(self) -> list[dict[str, Any]]:
        return self._request("GET", "/models")

    def model(self, name: str) -> dict[str, Any]:
        return self._request("GET", f"/models/{quote(name, safe='')}")

    def model_versions(self, name: str) -> list[dict[str, Any]]:
        return self._request("GET", f"/models/{quote(name, safe='')}/versions")

    def model_version(self, name: str, version: int) -> dict[str, Any]:
        return self._request("GET", f"/models/{quote(name, safe='')}/versions/{version}")

    def releases(self, name: str | None = None) -> list[dict[str, Any]]:
        return self._request("GET", "/releases", params={"name": name} if name else None)

    def release(self, name: str, version: int) -> dict[str, Any]:
        return self._request("GET", f"/releases/{quote(name, safe='')}/{version}")

    def device_page(self, **filters: Any) -> tuple[list[dict[str, Any]], int]:
        """Devices matching ``filters`` (tag, online, state, model, limit, offset) and the total match count."""
        params = {key: value for key, value in filters.items() if value is not None}
        response = self._send("GET", "/devices", params=params)
        rows = self._decode(response, "GET", "/devices")
        return rows, int(response.headers.get("X-Total-Count", len(rows)))

    def revoke_device(self, device_id: str, reason: str = "") -> dict[str, Any]:
        return self._request("POST", f"/devices/{quote(device_id, safe='')}/revoke", json={"reason": reason})

    def tag_device(self, device_id: str, add: list[str], remove: list[str]) -> dict[str, Any]:
        return self._request("PATCH", f"/devices/{quote(device_id, safe='')}/tags",
                             json={"add": add, "remove": remove})

    # -- security (issue 7) ------------------------------------------------------------------------

    def whoami(self) -> dict[str, Any]:
        return self._request("GET", "/whoami")

    def create_token(self, name: str, role: str, expires_days: int | None) -> dict[str, Any]:
        return self._request("POST", "/tokens", json={"name": name, "role": role, "expires_days": expires_days})

    def tokens(self, include_inactive: bool = False) -> list[dict[str, Any]]:
        return self._request("GET", "/tokens", params={"include_inactive": include_inactive})

    def revoke_token(self, token_id: int) -> dict[str, Any]:
        return self._request("DELETE", f"/tokens/{token_id}")

    def create_bootstrap_token(self, device_id: str | None, ttl_s: int) -> dict[str, Any]:
        return self._request("POST", "/bootstrap-tokens", json={"device_id": device_id, "ttl_s": ttl_s})

    def bootstrap_tokens(self, include_inactive: bool = False) -> list[dict[str, Any]]:
        return self._request("GET", "/bootstrap-tokens", params={"include_inactive": include_inactive})

    def revoke_bootstrap_token(self, token_id: int) -> dict[str, Any]:
        return self._request("DELETE", f"/bootstrap-tokens/{token_id}")

    def audit_entries(self, after_seq: int = 0, limit: int = 100, action: str | None = None) -> list[dict[str, Any]]:
        params = {"after_seq": after_seq, "limit": limit, **({"action": action} if action else {})}
        return self._request("GET", "/audit", params=params)

    def audit_verify(self) -> dict[str, Any]:
        return self._request("GET", "/audit/verify")

    def audit_export(self, after_seq: int = 0) -> Iterator[str]:
        """The export's JSON lines (decoded text, without line endings), streamed."""
        try:
            with self._http.stream("GET", "/api/v1/audit/export", params={"after_seq": after_seq}) as response:
                if response.status_code >= 400:
                    response.read()
                    self._raise_for(response, "GET", "/audit/export")
                yield from response.iter_lines()
        except httpx.HTTPError as exc:
            raise FleetServerUnreachableError(f"cannot reach the fleet server at {self.base_url}: {exc}") from exc

    def _raise_for(self, response: httpx.Response, method: str, path: str) -> None:
        try:
            detail = response.json().get("detail", response.text)
        except (ValueError, AttributeError):
            detail = response.text
        raise FleetClientError(f"{method} {path} -> {response.status_code}: {detail}", response.status_code)

    def release_request(self, name: str, version: int) -> dict[str, Any]:
        return self._request("GET", f"/models/{quote(name, safe='')}/versions/{version}/release-request")

    def submit_signed_release(self, envelope: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", "/releases/signed", json={"envelope": envelope})

    def reload_keys(self) -> dict[str, Any]:
        return self._request("POST", "/keys/reload")

    # -- compression (issue 5) -------------------------------------------------------------------------

    def upload_dataset(self, path: Path) -> dict[str, Any]:
        """Store a calibration/validation data set on the server; returns its sha256."""
        with open(path, "rb") as handle:
            return self._request("POST", "/datasets",
                                 files={"file": (Path(path).name, handle, "application/octet-stream")})

    def compress(self, name: str, version: int, options: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", f"/models/{quote(name, safe='')}/versions/{version}/compress", json=options)

    def compression_job(self, job_id: int) -> dict[str, Any]:
        return self._request("GET", f"/compression-jobs/{job_id}")

    def compression_jobs(self, name: str, version: int) -> list[dict[str, Any]]:
        return self._request("GET", f"/models/{quote(name, safe='')}/versions/{version}/compress")

    # -- telemetry and alerts (issue 6) --------------------------------------------------------------

    def device_telemetry(self, device_id: str, params: dict[str, Any]) -> dict[str, Any]:
        return self._request("GET", f"/telemetry/devices/{quote(device_id, safe='')}", params=params)

    def model_telemetry(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        return self._request("GET", f"/telemetry/models/{quote(name, safe='')}", params=params)

    def alerts(self, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return self._request("GET", "/alerts", params=params or {})

    def alert(self, alert_id: int) -> dict[str, Any]:
        return self._request("GET", f"/alerts/{alert_id}")

    def create_rollout(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", "/rollouts", json=body)

    def rollouts(self, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        return self._request("GET", "/rollouts", params={"limit": limit, **({"state": state} if state else {})})

    def rollout(self, rollout_id: int) -> dict[str, Any]:
        return self._request("GET", f"/rollouts/{rollout_id}")

    def rollout_operation(self, rollout_id: int, operation: str) -> dict[str, Any]:
        """start, pause, resume, abort, rollback or drop."""
        return self._request("POST", f"/rollouts/{rollout_id}/{operation}")

    def promote_rollout(self, rollout_id: int, body: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", f"/rollouts/{rollout_id}/promote", json=body)

    def rollout_cohorts(self, rollout_id: int) -> list[dict[str, Any]]:
        return self._request("GET", f"/rollouts/{rollout_id}/cohorts")

    def rollout_shadow(self, rollout_id: int) -> dict[str, Any]:
        return self._request("GET", f"/rollouts/{rollout_id}/shadow")
