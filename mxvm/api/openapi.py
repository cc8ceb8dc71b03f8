"""OpenAPI 3.1, generated from the route table and the pydantic models."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from mxvm import __version__
from mxvm.api.auth import Scope
from mxvm.api.routes import ROUTES, Route
from mxvm.api.schemas import Problem

REF = "#/components/schemas/{model}"


def _models() -> list[type[BaseModel]]:
    seen: dict[str, type[BaseModel]] = {"Problem": Problem}
    for r in ROUTES:
        for m in (r.request, r.response):
            if m is not None:
                seen[m.__name__] = m
    return list(seen.values())


def _content(model: type[BaseModel], is_list: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"$ref": REF.format(model=model.__name__)}
    if is_list:
        schema = {"type": "array", "items": schema}
    return {"application/json": {"schema": schema}}


def _operation(r: Route) -> dict[str, Any]:
    params = [
        {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
        for p in re.findall(r"{(\w+)}", r.path)
    ] + [
        {
            "name": k,
            "in": "query",
            "required": False,
            "description": v,
            "schema": {"type": "string"},
        }
        for k, v in r.query.items()
    ]
    problem = {
        "content": {"application/problem+json": {"schema": {"$ref": REF.format(model="Problem")}}}
    }
    ok: dict[str, Any] = {"description": "OK"}
    if r.response is not None:
        ok["content"] = _content(r.response, r.response_is_list)
    op: dict[str, Any] = {
        "operationId": r.name,
        "summary": r.summary,
        "parameters": params,
        "responses": {
            str(r.status): ok,
            "default": {"description": "problem details", **problem},
        },
    }
    if r.request is not None:
        op["requestBody"] = {"required": True, "content": _content(r.request)}
    if r.scope == Scope.PUBLIC:
        op["security"] = []
    return op


def build_openapi() -> dict[str, Any]:
    _, defs = models_json_schema([(m, "validation") for m in _models()], ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    for r in ROUTES:
        paths.setdefault(r.path, {})[r.method.lower()] = _operation(r)
    return {
        "openapi": "3.1.0",
        "info": {"title": "mxvm", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


async def openapi(_request: web.Request) -> web.Response:
    return web.json_response(build_openapi())
