"""Domain errors and their HTTP answers, in one place: a conflict is 409, a
dangling reference is 422 in FastAPI's own error shape, a request over a limit
413, and the CA's refusals are 403, 422 or 409. Code below the routers raises
these; only ``install`` knows HTTP. A JSON body that cannot be read at all (not
UTF-8, nested too deep for the parser), which FastAPI answers 400, is a 422 at
``["body"]`` like any other JSON that does not parse.

Every 422 item is ``{"loc", "msg", "type"}``: pydantic's own errors (request
bodies, and the specs ``apply`` validates) go through ``items``, which words
them for people (no "Value error, " prefix; an unknown field says so)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic_core import ErrorDetails
from starlette.exceptions import HTTPException

from meshctl.control.ca.errors import CsrRefused, RotationRefused


class Conflict(Exception):
    """The resource exists, is referenced, or the write is based on a stale resource_version."""


class Invalid(Exception):
    """Input that validates alone but not against the mesh; `errors` are FastAPI-style 422 items."""

    def __init__(self, errors: list[dict[str, Any]]):
        super().__init__("; ".join(e["msg"] for e in errors))
        self.errors = errors


class TooLarge(Exception):
    """A request over one of the API's limits (body size, documents per apply): 413."""


# pydantic prefixes what a validator raises with the error's kind; people need only the reason.
_PREFIXES = ("Value error, ", "Assertion failed, ")


def message(error: ErrorDetails | dict[str, Any]) -> str:
    """One pydantic error's message as the API shows it."""
    if error["type"] == "extra_forbidden":
        return "unknown field"
    msg = str(error["msg"])
    for prefix in _PREFIXES:
        msg = msg.removeprefix(prefix)
    return msg


def items(errors: Sequence[ErrorDetails | dict[str, Any]], at: Sequence[str | int] = ()) -> list[dict[str, Any]]:
    """pydantic's errors as 422 items, their locations under `at`."""
    return [{"loc": [*at, *e["loc"]], "msg": message(e), "type": e["type"]} for e in errors]


def _detail(code: int, e: Exception) -> JSONResponse:
    return JSONResponse(status_code=code, content={"detail": str(e)})


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _unprocessable(_: Request, e: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=status.HTTP_422_UNPROCESSABLE_ENTITY, content={"detail": items(e.errors())})

    @app.exception_handler(HTTPException)
    async def _http(request: Request, e: HTTPException) -> Response:
        # FastAPI's 400 for a body it failed to parse is raised from the parser's error; the
        # routes' own HTTPExceptions are raised from nothing.
        if e.status_code == status.HTTP_400_BAD_REQUEST and isinstance(e.__cause__, ValueError | RecursionError):
            why = "nested too deeply" if isinstance(e.__cause__, RecursionError) else str(e.__cause__)
            item = {"loc": ["body"], "msg": f"not JSON: {why}", "type": "json_invalid"}
            return JSONResponse(status_code=status.HTTP_422_UNPROCESSABLE_ENTITY, content={"detail": [item]})
        return await http_exception_handler(request, e)

    @app.exception_handler(TooLarge)
    async def _too_large(_: Request, e: TooLarge) -> JSONResponse:
        return _detail(status.HTTP_413_CONTENT_TOO_LARGE, e)

    @app.exception_handler(Conflict)
    async def _conflict(_: Request, e: Conflict) -> JSONResponse:
        return _detail(status.HTTP_409_CONFLICT, e)

    @app.exception_handler(Invalid)
    async def _invalid(_: Request, e: Invalid) -> JSONResponse:
        return JSONResponse(status_code=status.HTTP_422_UNPROCESSABLE_ENTITY, content={"detail": e.errors})

    @app.exception_handler(CsrRefused)
    async def _csr_refused(_: Request, e: CsrRefused) -> JSONResponse:
        # Asking for an identity the join token does not carry is forbidden; a malformed CSR is not.
        return _detail(status.HTTP_403_FORBIDDEN if e.forbidden else status.HTTP_422_UNPROCESSABLE_ENTITY, e)

    @app.exception_handler(RotationRefused)
    async def _rotation_refused(_: Request, e: RotationRefused) -> JSONResponse:
        return _detail(status.HTTP_409_CONFLICT, e)
