"""The error answers of every operation, written into the OpenAPI document from
what each route depends on, so that a new route is documented as it is guarded
(schemathesis found every authenticated operation answering an undocumented
401, and most an undocumented 403, 404, 409 or 413).

Derived, per operation:
- 401 when it takes a bearer token (it depends on ``deps.authenticate``);
- 403 when it needs a role (``require_reader``, ``require_admin``, ``require_writer``);
  the routes that refuse a caller otherwise (tap's admin-only check, a sidecar's calls
  for another service, an SVID for a token that is no join token) declare their 403
  in ``responses=``, as the routes that look up what their query or body names declare
  their 404;
- 404 when its path names something (every such route looks it up first);
- 409 for the writes that record a revision (``require_writer``) with a body or a DELETE:
  the resource exists, is referenced, or the write names a stale ``resource_version``;
- 413 when it takes a body under ``/api/`` (``limits.BodyLimit``).
What a route declares itself wins over these. Every error answer but 422 is
``{"detail": "..."}`` (`ErrorDetail`), whatever the operation's own media type."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.routing import BaseRoute

from meshctl.control import deps


class ErrorDetail(BaseModel):
    """An error answer (every one but 422, whose `detail` lists the fields at fault)."""

    detail: str = Field(description="What is wrong, for people.")


_REF = {"$ref": "#/components/schemas/ErrorDetail"}

_ROLES = {deps.require_reader, deps.require_admin, deps.require_writer}

_WHY = {
    401: "No valid bearer token (an expired join token: only for its own sidecars)",
    403: "The token may not do this",
    404: "Not found",
    409: "Exists already, is referenced, or the resource_version is stale",
    413: "The body is over the API's limit (max_request_bytes), or an apply has too many documents",
}


def api_routes(routes: Sequence[BaseRoute]) -> Iterator[APIRoute]:
    """The app's API routes: FastAPI >= 0.13x keeps an included router whole (its routes under
    `original_router`, their paths prefixed already); older ones copy its routes into the app's."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif (router := getattr(route, "original_router", None)) is not None:
            yield from api_routes(router.routes)


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)


def statuses(route: APIRoute) -> set[int]:
    """The error statuses `route` may answer, as derived above (not those it declares itself)."""
    calls = set(_calls(route.dependant))
    out = set()
    if deps.authenticate in calls:
        out.add(401)
    if calls & _ROLES:
        out.add(403)
    if route.dependant.path_params:
        out.add(404)
    if deps.require_writer in calls and (route.body_field is not None or "DELETE" in (route.methods or ())):
        out.add(409)  # (a rollback restores whatever was: it conflicts with nothing)
    if route.body_field is not None and route.path_format.startswith("/api/"):
        out.add(413)
    return out


def _add(document: dict[str, Any], routes: list[APIRoute]) -> None:
    document.setdefault("components", {}).setdefault("schemas", {})["ErrorDetail"] = ErrorDetail.model_json_schema()
    for route in routes:
        declared = {int(code) for code in route.responses if str(code).isdigit()}
        for method in route.methods or ():
            answers = document["paths"][route.path_format][method.lower()]["responses"]
            for code in statuses(route) - declared:
                answers[str(code)] = {"description": _WHY[code]}
            for code, answer in answers.items():
                if code.startswith(("4", "5")) and code != "422" and "content" not in answer:
                    answer["content"] = {"application/json": {"schema": _REF}}


def install(app: FastAPI) -> None:
    """Make `app.openapi()` document the error answers (after FastAPI builds the document)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            routes = [r for r in api_routes(app.routes) if r.include_in_schema]
            _add(build(), routes)
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
