"""Domain errors and their HTTP answers, in one place: a conflict is 409, a
dangling reference is 422 in FastAPI's own error shape, and the CA's refusals
are 403, 422 or 409. Code below the routers raises these; only ``install``
knows HTTP."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse

from meshctl.control.ca.errors import CsrRefused, RotationRefused


class Conflict(Exception):
    """The resource exists, is referenced, or the write is based on a stale resource_version."""


class Invalid(Exception):
    """Input that validates alone but not against the mesh; `errors` are FastAPI-style 422 items."""

    def __init__(self, errors: list[dict[str, Any]]):
        super().__init__("; ".join(e["msg"] for e in errors))
        self.errors = errors


def _detail(code: int, e: Exception) -> JSONResponse:
    return JSONResponse(status_code=code, content={"detail": str(e)})


def install(app: FastAPI) -> None:
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
