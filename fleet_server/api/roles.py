"""Which role each API route requires, read from its dependencies, and written
into the OpenAPI schema as ``x-edgefleet-role`` on every operation.

Roles: ``public`` (no token), ``authenticated`` (any valid token: a device or
any operator role), ``device``, ``viewer``, ``operator``, ``admin``. A route
declares one by taking the matching alias from ``fleet_server.api.deps``; a
route that declares none has no ``x-edgefleet-role`` and the route-walking
test (tests/fleet_server/test_api_roles.py) fails on it.
"""

from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI, routing
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from fleet_server.api import deps

ROLE_KEY = "x-edgefleet-role"
OPERATOR_ROLES = ("admin", "operator", "viewer")  # strictest first
MARKERS: dict[Callable[..., Any], str] = {
    deps.require_admin: "admin",
    deps.require_operator: "operator",
    deps.require_viewer: "viewer",
    deps.require_device: "device",
    deps.identify_caller: "authenticated",
    deps.public_endpoint: "public",
}


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for dependency in dependant.dependencies:
        if dependency.call is not None:
            yield dependency.call
        yield from _calls(dependency)


def route_role(route: APIRoute) -> str | None:
    found = {MARKERS[call] for call in _calls(route.dependant) if call in MARKERS}
    for role in (*OPERATOR_ROLES, "device", "authenticated", "public"):
        if role in found:
            return role
    return None


def api_routes(app: FastAPI) -> Iterator[tuple[str, APIRoute]]:
    """(path as in the OpenAPI schema, route) of every API route, included routers flattened."""
    iter_contexts = getattr(routing, "iter_route_contexts", None)  # FastAPI >= 0.165 includes routers lazily
    if iter_contexts is None:
        for route in app.routes:
            if isinstance(route, APIRoute):
                yield route.path_format, route
        return
    for context in iter_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute):
            yield context.path_format or route.path_format, route


def install_role_docs(app: FastAPI) -> None:
    """Make ``app.openapi()`` carry each operation's role."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        for path, route in api_routes(app):
            if not route.include_in_schema:
                continue
            role = route_role(route)
            operations = schema.get("paths", {}).get(path, {})
            for method in route.methods or ():  # Starlette's Route types it optional; an APIRoute always has a set
                operation = operations.get(method.lower())
                if operation is not None and role is not None:
                    operation[ROLE_KEY] = role
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
