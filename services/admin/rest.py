"""The REST API (FastAPI, under /api/v1) over the same AdminApi object as gRPC.

Every route maps to one admin RPC: its request fields come from the JSON body,
the query string and the path (models.py derives them from admin.proto), its reply
is the protobuf reply as JSON with the proto field names. Errors are JSON
``{"error": CODE, "message": TEXT}``: 400 bad input (validation included — never a
500 for it), 401 without a valid token, 403 a read-only token on a write, 404
unknown, 409 duplicate, 503 a backend or instance unreachable.

Authentication is a bearer token: the read token may call the routes of read RPCs
(all GET), the write token every route (see sipmesh/clients/admin_auth.py and
docs/admin.md).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from google.protobuf import json_format
from google.protobuf.message import Message as ProtoMessage
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from sipmesh import __version__
from sipmesh.admin.base import Actor, acting_as
from sipmesh.admin.models import model_of
from sipmesh.admin.routes import ROUTES, RouteSpec
from sipmesh.clients.admin_api import AdminApi
from sipmesh.clients.admin_auth import WRITE, Tokens
from sipmesh.clients.errors import ServiceError
from sipmesh.gen.sipmesh.v1 import common_pb2

log = logging.getLogger("sipmesh.admin.rest")

PREFIX = "/api/v1"
_STATUS = {
    "CODE_INVALID_ARGUMENT": 400,
    "CODE_NOT_FOUND": 404,
    "CODE_ALREADY_EXISTS": 409,
    "CODE_PERMISSION_DENIED": 403,
    "CODE_UNAUTHENTICATED": 401,
    "CODE_UNAVAILABLE": 503,
    "CODE_DEADLINE_EXCEEDED": 504,
    "CODE_RESOURCE_EXHAUSTED": 429,
    "CODE_CANCELLED": 499,
}


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


def to_json(message: ProtoMessage) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


_bearer = HTTPBearer(auto_error=False, description="read-only or read-write admin token")


def _auth(tokens: Tokens, write: bool) -> Callable[..., Awaitable[str]]:
    async def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> str:
        role = tokens.role(credentials.credentials) if credentials is not None else None
        if role is None:
            raise _AuthError(401, "a valid bearer token is required")
        if write and role != WRITE:
            raise _AuthError(403, "this token may only read")
        client = request.client
        acting_as(Actor(f"token:{role}", f"{client.host}:{client.port}" if client else ""))
        return role

    return check


class _AuthError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _endpoint(api: AdminApi, spec: RouteSpec, model: type[BaseModel] | None) -> Callable[..., Any]:
    method = getattr(api, spec.rpc)

    async def endpoint(**kwargs: Any) -> Response:
        data: dict[str, Any] = {}
        body = kwargs.pop("payload", None)
        if isinstance(body, BaseModel):
            data.update(body.model_dump(exclude_none=True))
        for name in spec.path_params:
            data[name] = kwargs.pop(name)
        data.update(spec.fixed)
        request = spec.request_type()
        try:
            json_format.ParseDict(data, request)
        except json_format.ParseError as exc:
            return _error(400, "CODE_INVALID_ARGUMENT", str(exc).splitlines()[0])
        reply = await method(request)
        return JSONResponse(to_json(reply), status_code=spec.status)

    params = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Annotated[str, PathParam(max_length=255)],
        )
        for name in spec.path_params
    ]
    if model is not None:
        source: Any = Query() if spec.source == "query" else None
        annotation = Annotated[model, source] if source is not None else model
        params.append(
            inspect.Parameter("payload", inspect.Parameter.KEYWORD_ONLY, annotation=annotation)
        )
    endpoint.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    endpoint.__name__ = spec.rpc
    return endpoint


def build_app(api: AdminApi, tokens: Tokens, *, console_dir: Path | None = None) -> FastAPI:
    app = FastAPI(
        title="sipmesh admin API",
        version=__version__,
        description="kamctl/kamcmd for a sipmesh cluster (see docs/admin.md)",
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=None,
        redoc_url=None,
    )

    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> Response:
        code_name = common_pb2.CallError.Code.Name(type(exc).code)
        return _error(_STATUS.get(code_name, 500), code_name, exc.message)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query"))
        message = f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg"))
        return _error(400, "CODE_INVALID_ARGUMENT", message)

    @app.exception_handler(_AuthError)
    async def auth_error(_: Request, exc: _AuthError) -> Response:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        code = "CODE_UNAUTHENTICATED" if exc.status == 401 else "CODE_PERMISSION_DENIED"
        return _error(exc.status, code, exc.message, headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        return _error(exc.status_code, "CODE_HTTP", str(exc.detail))

    read_auth, write_auth = _auth(tokens, False), _auth(tokens, True)
    for spec in ROUTES:
        model = None
        if spec.source != "none":
            exclude = frozenset(spec.path_params) | frozenset(spec.fixed) | spec.exclude
            model = model_of(
                spec.request_type.DESCRIPTOR, exclude=exclude, name=f"{spec.rpc}_{spec.source}"
            )
        app.add_api_route(
            PREFIX + spec.path,
            _endpoint(api, spec, model),
            methods=[spec.method],
            summary=spec.summary,
            tags=[spec.tag],
            dependencies=[Depends(write_auth if spec.write else read_auth)],
            status_code=spec.status,
            operation_id=spec.rpc,
            responses={
                400: {"description": "bad input"},
                401: {"description": "no valid token"},
                403: {"description": "read-only token on a write"},
                404: {"description": "not found"},
                409: {"description": "already exists"},
            },
        )

    if console_dir is not None:
        from sipmesh.admin.console.pages import add_console

        add_console(app, console_dir)

        @app.get("/", include_in_schema=False)
        async def root() -> Response:
            return RedirectResponse("/console/")

    return app
