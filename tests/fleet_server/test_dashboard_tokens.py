"""API tokens in the dashboard (admin only): issue with the secret shown once,
the list and its filter, revoke (the API and the token's dashboard sessions
refuse it at once), CSRF, roles, and form errors that create nothing."""

import logging
import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape
from sqlmodel import Session

from fleet_server.core.types import utcnow
from fleet_server.dashboard.views_tokens import TokenFormError, token_request
from fleet_server.models.tokens import ApiToken, Role
from tests.fleet_server.conftest import ADMIN_TOKEN, Api, admin_headers

SECRET = re.compile(r'<code class="mono" id="new-token">(efo_[^<]+)</code>')


def log_in(api: Api, token: str) -> TestClient:
    client = TestClient(api.app, follow_redirects=False)
    assert client.post("/ui/login", data={"token": token}).status_code == 303
    return client


def csrf_of(client: TestClient, path: str = "/ui/") -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text)
    assert match, "no CSRF token on the page"
    return match.group(1)


def listed(client: TestClient, show: str = "") -> dict[int, str]:
    """Token id -> state of the rows on the tokens page."""
    page = client.get("/ui/tokens", params={"show": show} if show else None)
    assert page.status_code == 200, page.text
    return {int(token_id): state for token_id, state in re.findall(r'data-token="(\d+)" data-state="(\w+)"', page.text)}


def token_count(api: Api) -> int:
    return len(api.get("/tokens", params={"include_inactive": "true"}).json())


@pytest.fixture(scope="module")
def ui_admin(api: Api) -> dict:
    """An admin API token (not the bootstrap admin), so the audit trail names the dashboard user."""
    issued = api.post("/tokens", json={"name": "ui admin", "role": "admin"})
    assert issued.status_code == 201
    return issued.json()


@pytest.fixture
def admin(api: Api, ui_admin: dict) -> Iterator[TestClient]:
    client = log_in(api, ui_admin["token"])
    yield client
    client.close()


def test_form_text_becomes_a_token_request() -> None:
    request = token_request(" ci runner ", "operator", " 30 ")
    assert (request.name, request.role, request.expires_days) == ("ci runner", Role.OPERATOR, 30)
    assert token_request("forever", "viewer", "").expires_days is None
    for (name, role, days), message in {("", "viewer", "90"): "name", ("x" * 65, "viewer", "90"): "name",
                                        ("ok", "root", "90"): "role", ("ok", "viewer", "0"): "expires after",
                                        ("ok", "viewer", "abc"): "expires after",
                                        ("ok", "viewer", "99999"): "expires after"}.items():
        with pytest.raises(TokenFormError, match=f"^{message}:"):
            token_request(name, role, days)


def test_issue_shows_the_secret_once_and_it_works_with_its_role(
        api: Api, admin: TestClient, ui_admin: dict, caplog: pytest.LogCaptureFixture) -> None:
    page = admin.get("/ui/tokens")
    assert page.status_code == 200 and 'href="/ui/tokens"' in page.text and 'id="token-form"' in page.text
    csrf = csrf_of(admin, "/ui/tokens")
    with caplog.at_level(logging.DEBUG):
        answer = admin.post("/ui/tokens", data={"csrf_token": csrf, "name": "line-3 runner", "role": "operator",
                                                "expires_days": "30"})
    assert answer.status_code == 200 and "location" not in answer.headers
    assert answer.headers["cache-control"] == "no-store"
    match = SECRET.search(answer.text)
    assert match and "Copy it now: it is not shown again." in answer.text
    secret = match.group(1)
    assert any("event=token_issued" in record.getMessage() for record in caplog.records)  # the issue is logged,
    assert not any(secret in record.getMessage() for record in caplog.records)  # its secret never

    issued = next(token for token in api.get("/tokens").json() if token["name"] == "line-3 runner")
    actor = f"token:ui admin#{ui_admin['id']}"
    assert issued["role"] == "operator" and issued["created_by"] == actor and issued["expires_at"]
    assert listed(admin)[issued["id"]] == "active"
    for path in ("/ui/tokens", "/ui/tokens?show=all"):
        assert secret not in admin.get(path).text  # shown on the issue answer only

    headers = admin_headers(secret)
    whoami = api.client.get("/api/v1/whoami", headers=headers).json()
    assert whoami == {"actor": f"token:line-3 runner#{issued['id']}", "role": "operator", "device_id": None}
    assert api.client.get("/api/v1/devices", headers=headers).status_code == 200
    assert api.client.get("/api/v1/tokens", headers=headers).status_code == 403  # operators do not manage tokens
    audit = api.get("/audit", params={"action": "token.issued", "limit": 1000}).json()
    assert any(entry["actor"] == actor and entry["details"]["token_id"] == issued["id"] for entry in audit)

    never = admin.post("/ui/tokens", data={"csrf_token": csrf, "name": "kiosk", "role": "viewer",
                                           "expires_days": ""})
    assert never.status_code == 200 and "It does not expire." in never.text
    assert next(token for token in api.get("/tokens").json() if token["name"] == "kiosk")["expires_at"] is None


def test_list_shows_active_tokens_and_all_on_request(api: Api, admin: TestClient) -> None:
    active, revoked, expired = (api.post("/tokens", json={"name": f"list {kind}", "role": "viewer"}).json()["id"]
                                for kind in ("active", "revoked", "expired"))
    assert api.client.delete(f"/api/v1/tokens/{revoked}", headers=api.headers).status_code == 200
    with Session(api.runtime.engine) as session:
        token = session.get(ApiToken, expired)
        assert token is not None
        token.expires_at = utcnow() - timedelta(hours=1)
        session.add(token)
        session.commit()

    default = listed(admin)
    assert default[active] == "active" and revoked not in default and expired not in default
    assert all(state == "active" for state in default.values())
    everything = listed(admin, "all")
    assert (everything[active], everything[revoked], everything[expired]) == ("active", "revoked", "expired")
    page = admin.get("/ui/tokens", params={"show": "all"}).text
    assert f'action="/ui/tokens/{revoked}/revoke"' not in page and f'action="/ui/tokens/{active}/revoke"' in page
    assert admin.get("/ui/tokens", params={"show": "bogus"}).status_code == 422


def test_revoke_ends_the_token_in_the_api_and_its_dashboard_sessions(
        api: Api, admin: TestClient, ui_admin: dict) -> None:
    victim = api.post("/tokens", json={"name": "to revoke", "role": "operator"}).json()
    headers = admin_headers(victim["token"])
    assert api.client.get("/api/v1/whoami", headers=headers).status_code == 200
    holder = log_in(api, victim["token"])
    assert holder.get("/ui/devices").status_code == 200

    csrf = csrf_of(admin, "/ui/tokens")
    assert admin.post(f"/ui/tokens/{victim['id']}/revoke", data={}).status_code == 403  # no CSRF token
    assert admin.post(f"/ui/tokens/{victim['id']}/revoke", data={"csrf_token": "forged"}).status_code == 403
    assert api.client.get("/api/v1/whoami", headers=headers).status_code == 200  # still valid

    done = admin.post(f"/ui/tokens/{victim['id']}/revoke", data={"csrf_token": csrf, "show": "all"})
    assert done.status_code == 303 and done.headers["location"] == "/ui/tokens?show=all"
    assert api.client.get("/api/v1/whoami", headers=headers).status_code == 401  # refused at once
    logged_out = holder.get("/ui/devices")
    assert logged_out.status_code == 303 and logged_out.headers["location"].startswith("/ui/login")
    holder.close()
    assert listed(admin, "all")[victim["id"]] == "revoked" and victim["id"] not in listed(admin)
    audit = api.get("/audit", params={"action": "token.revoked", "limit": 1000}).json()
    assert any(entry["actor"] == f"token:ui admin#{ui_admin['id']}" and entry["details"]["token_id"] == victim["id"]
               for entry in audit)

    missing = admin.post("/ui/tokens/999999/revoke", data={"csrf_token": csrf})
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
    assert "no API token with id 999999" in missing.text


def test_csrf_is_required_to_issue(api: Api, admin: TestClient) -> None:
    before = token_count(api)
    form = {"name": "no csrf", "role": "admin", "expires_days": "1"}
    assert admin.post("/ui/tokens", data=form).status_code == 403
    assert admin.post("/ui/tokens", data={**form, "csrf_token": "forged"}).status_code == 403
    cross = admin.post("/ui/tokens", data={**form, "csrf_token": csrf_of(admin, "/ui/tokens")},
                       headers={"origin": "https://evil.example"})
    assert cross.status_code == 403 and "another origin" in cross.text
    assert token_count(api) == before


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_non_admins_get_403_and_no_tokens_link(api: Api, role: str) -> None:
    issued = api.post("/tokens", json={"name": f"ui {role}", "role": role}).json()
    client = log_in(api, issued["token"])
    csrf = csrf_of(client)
    assert 'href="/ui/tokens"' not in client.get("/ui/").text
    before = token_count(api)
    for response in (client.get("/ui/tokens"),
                     client.post("/ui/tokens", data={"csrf_token": csrf, "name": "sneaky", "role": "admin"}),
                     client.post(f"/ui/tokens/{issued['id']}/revoke", data={"csrf_token": csrf})):
        assert response.status_code == 403 and "this needs the admin role" in response.text
        assert response.headers["content-type"].startswith("text/html")
    assert token_count(api) == before
    assert api.client.get("/api/v1/whoami", headers=admin_headers(issued["token"])).status_code == 200
    client.close()


@pytest.mark.parametrize(("form", "message"), [
    ({"name": "", "role": "viewer", "expires_days": "90"}, "name: 1-64 letters"),
    ({"name": "<b>bad</b>", "role": "viewer", "expires_days": "90"}, "name: 1-64 letters"),
    ({"name": "fine", "role": "root", "expires_days": "90"}, "role: choose one of viewer, operator, admin"),
    ({"name": "fine", "role": "viewer", "expires_days": "0"}, "expires after: a whole number of days"),
    ({"name": "fine", "role": "viewer", "expires_days": "soon"}, "expires after: a whole number of days"),
], ids=["empty-name", "markup-name", "unknown-role", "zero-days", "text-days"])
def test_bad_input_rerenders_the_form_with_one_error(api: Api, admin: TestClient, form: dict, message: str) -> None:
    before = token_count(api)
    answer = admin.post("/ui/tokens", data={**form, "csrf_token": csrf_of(admin, "/ui/tokens")})
    assert answer.status_code == 422 and 'id="token-form"' in answer.text
    errors = re.findall(r'<p class="error" role="alert" id="token-error">([^<]*)</p>', answer.text)
    assert len(errors) == 1 and errors[0].startswith(message)
    assert SECRET.search(answer.text) is None and token_count(api) == before
    assert f'name="name" value="{escape(form["name"])}"' in answer.text  # what was typed stays (escaped)
    assert f'value="{escape(form["expires_days"])}"' in answer.text


def test_the_bootstrap_admin_is_an_admin_here_too(api: Api) -> None:
    client = log_in(api, ADMIN_TOKEN)
    assert client.get("/ui/tokens").status_code == 200
    client.close()
