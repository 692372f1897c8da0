"""Every API operation declares its role, and refuses callers without it: walks
the served OpenAPI schema, so routes added later are covered too.

401 without a token or with an unknown one; 403 with a device credential on an
operator route, with a lower operator role, or with an operator token on a
device route. Authentication runs before the body and parameters are looked at,
so the requests carry dummy values.
"""

from typing import Any

import pytest

from fleet_server.api.roles import ROLE_KEY
from tests.fleet_server.conftest import Api
from tests.fleet_server.security_helpers import bearer, issue_token

ROLES = ("viewer", "operator", "admin")
KNOWN = {"public", "authenticated", "device", *ROLES}


@pytest.fixture(scope="module")
def database_backend() -> str:
    """Roles do not depend on the database: SQLite only (the other API tests run on both)."""
    return "sqlite"


def operations(api: Api) -> list[tuple[str, str, dict[str, Any]]]:
    schema = api.client.get("/api/v1/openapi.json").json()
    return [(method.upper(), path, operation) for path, methods in schema["paths"].items()
            for method, operation in methods.items()]


def concrete_path(path: str, operation: dict[str, Any]) -> str:
    for parameter in operation.get("parameters", []):
        if parameter.get("in") != "path":
            continue
        schema = parameter.get("schema", {})
        value = "1" if schema.get("type") == "integer" else ("0" * 64 if "64" in schema.get("pattern", "")
                                                               else "nobody")
        path = path.replace("{" + parameter["name"] + "}", value)
    return path


@pytest.fixture(scope="module")
def callers(api: Api) -> dict[str, dict[str, str]]:
    credential = api.enroll("roles-device").json()["credential"]
    headers = {role: bearer(issue_token(api, role, f"roles-{role}")) for role in ROLES}
    headers["device"] = bearer(credential)
    headers["none"] = {}
    headers["unknown"] = bearer("efo_not-a-real-token")
    return headers


def call(api: Api, method: str, path: str, headers: dict[str, str]) -> int:
    body = {} if method in ("POST", "PUT", "PATCH") else None
    return api.client.request(method, path, headers=headers, json=body).status_code


def refused_by(role: str) -> list[str]:
    """Callers that must get 403 from a route needing ``role``."""
    if role in ROLES:
        return ["device", *ROLES[:ROLES.index(role)]]
    if role == "device":
        return list(ROLES)
    return []


def test_every_operation_declares_a_known_role(api: Api) -> None:
    undeclared = [f"{method} {path}" for method, path, operation in operations(api)
                  if operation.get(ROLE_KEY) not in KNOWN]
    assert undeclared == [], "declare a role (ViewerDep, OperatorDep, AdminDep, DeviceDep, PublicDep) on these"


def test_each_operation_refuses_callers_without_its_role(api: Api, callers: dict[str, dict[str, str]]) -> None:
    failures = []
    checked = 0
    for method, path, operation in operations(api):
        role = operation.get(ROLE_KEY)
        url = concrete_path(path, operation)
        if role == "public":
            status = call(api, method, url, callers["none"])
            if status in (401, 403) or status >= 500:
                failures.append(f"{method} {path} is public but answered {status} without a token")
            continue
        expectations = [("none", 401), ("unknown", 401)] + [(who, 403) for who in refused_by(role)]
        for who, expected in expectations:
            status = call(api, method, url, callers[who])
            checked += 1
            if status != expected:
                failures.append(f"{method} {path} ({role}) answered {status} to {who}, expected {expected}")
    assert failures == []
    assert checked > 50


def test_a_role_reaches_what_it_may(api: Api, callers: dict[str, dict[str, str]]) -> None:
    assert api.client.get("/api/v1/models", headers=callers["viewer"]).status_code == 200
    assert api.client.get("/api/v1/devices/roles-device", headers=callers["viewer"]).status_code == 200
    release = api.client.post("/api/v1/releases", headers=callers["operator"], json={"model": "nope", "version": 1})
    assert release.status_code == 404  # past the role check
    assert api.client.get("/api/v1/tokens", headers=callers["admin"]).status_code == 200
    assert api.client.get("/api/v1/audit/verify", headers=callers["admin"]).json()["ok"] is True
