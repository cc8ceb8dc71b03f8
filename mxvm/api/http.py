"""Request parsing and JSON responses shared by every route module."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from mxvm.api.parse import BadRequest, body, query_number
from mxvm.coordinator import Coordinator

__all__ = ["COORDINATOR", "BadRequest", "body", "coordinator", "dump", "query_number", "reply"]

COORDINATOR = web.AppKey("coordinator", Coordinator)


def coordinator(request: web.Request) -> Coordinator:
    return request.app[COORDINATOR]


def dump(value: BaseModel | Sequence[BaseModel] | dict[str, Any]) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: dump(v) if isinstance(v, BaseModel) else v for k, v in value.items()}
    return [v.model_dump(mode="json") for v in value]


def reply(
    value: BaseModel | Sequence[BaseModel] | dict[str, Any], status: int = 200
) -> web.Response:
    # Models go through pydantic's own JSON encoder: a third of the time of dumping them to
    # dicts for the json module (measured: an agent's 70 allocations, 2.3 -> 0.8 ms).
    if isinstance(value, BaseModel):
        body = value.model_dump_json().encode()
    elif isinstance(value, dict):
        return web.json_response(dump(value), status=status)
    else:
        body = b"[" + b",".join(v.model_dump_json().encode() for v in value) + b"]"
    return web.Response(body=body, status=status, content_type="application/json")
