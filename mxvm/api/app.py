"""The aiohttp application: route table, auth, problem+json errors."""

from __future__ import annotations

from aiohttp import web

from mxvm.api.auth import SCOPE, TOKENS, Scope, Tokens, auth_middleware
from mxvm.api.errors import error_middleware
from mxvm.api.http import COORDINATOR
from mxvm.api.openapi import openapi
from mxvm.api.routes import ROUTES
from mxvm.coordinator import Coordinator


def create_app(coord: Coordinator) -> web.Application:
    s = coord.settings
    app = web.Application(middlewares=[error_middleware, auth_middleware], client_max_size=4 << 20)
    app[COORDINATOR] = coord
    app[TOKENS] = Tokens(
        s.admin_token.get_secret_value() if s.admin_token else None,
        [t.get_secret_value() for t in s.agent_tokens],
    )
    scopes = {r.name: r.scope for r in ROUTES}
    scopes["openapi"] = Scope.ANY
    app[SCOPE] = scopes
    for r in ROUTES:
        app.router.add_route(r.method, r.path, r.handler, name=r.name)
    app.router.add_get("/api/v1/openapi.json", openapi, name="openapi")
    return app
