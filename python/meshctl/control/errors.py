"""Domain errors to HTTP answers, in one place: a conflict is 409, a
dangling reference is 422 in FastAPI's own error shape."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from meshctl.control.crud import Conflict, Invalid


def install(app: FastAPI) -> None:
    @app.exception_handler(Conflict)
    async def _conflict(_: Request, e: Conflict) -> JSONResponse:
        return JSONResponse(status_code=409, content={"detail": str(e)})

    @app.exception_handler(Invalid)
    async def _invalid(_: Request, e: Invalid) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": e.errors})
