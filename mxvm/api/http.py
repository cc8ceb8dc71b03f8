"""Request parsing and JSON responses shared by every route module."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from mxvm.api.errors import field_errors
from mxvm.coordinator import Coordinator
from mxvm.errors import InvalidSpec, MxvmError

COORDINATOR = web.AppKey("coordinator", Coordinator)

M = TypeVar("M", bound=BaseModel)


class BadRequest(MxvmError):
    status = 400
    title = "bad request"


def coordinator(request: web.Request) -> Coordinator:
    return request.app[COORDINATOR]


async def body(request: web.Request, model: type[M]) -> M:
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = field_errors(exc)
        fields = ", ".join(e["field"] for e in errors)
        raise InvalidSpec(f"invalid {model.__name__}: {fields}", errors=errors) from exc


def query_number(request: web.Request, name: str, default: float, lo: float, hi: float) -> float:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw.removesuffix("s"))
    except ValueError as exc:
        raise BadRequest(f"query parameter {name!r} must be a number, got {raw!r}") from exc
    if not lo <= value <= hi:
        raise BadRequest(f"query parameter {name!r} must be between {lo:g} and {hi:g}")
    return value


def dump(value: BaseModel | Sequence[BaseModel] | dict[str, Any]) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: dump(v) if isinstance(v, BaseModel) else v for k, v in value.items()}
    return [v.model_dump(mode="json") for v in value]


def reply(
    value: BaseModel | Sequence[BaseModel] | dict[str, Any], status: int = 200
) -> web.Response:
    return web.json_response(dump(value), status=status)
