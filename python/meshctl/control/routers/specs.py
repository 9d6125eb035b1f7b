"""One router per kind stored as its spec (every kind in the registry but Service),
made by one factory since they share their shape: references are checked
and a revision is recorded on every write."""

# No `from __future__ import annotations`: FastAPI reads these handlers'
# annotations, which name the factory's arguments, at decoration time.

from typing import Any, cast

from fastapi import APIRouter, status

from meshctl.control import crud
from meshctl.control.deps import Reader, SessionDep, Writer
from meshctl.control.kinds.base import Kind
from meshctl.control.kinds.registry import KINDS
from meshctl.control.routers.common import found


def spec_router(kind: Kind) -> APIRouter:
    kind_name, path = kind.name, kind.entry.plural
    create_model, update_model, public = kind.create, kind.update, kind.public
    router = APIRouter(prefix=f"/api/v1/{path}", tags=[path])

    @router.get("", response_model=list[public], name=f"list {kind_name}")  # type: ignore[valid-type]
    def list_all(session: SessionDep, _: Reader, namespace: str | None = None) -> Any:
        return crud.list_all(session, kind.table, namespace=namespace)

    @router.post("", response_model=public, status_code=status.HTTP_201_CREATED, name=f"create {kind_name}")
    def create(session: SessionDep, by: Writer, data: create_model) -> Any:  # type: ignore[valid-type]
        body = cast(Any, data)
        return crud.create(
            session,
            kind=kind,
            namespace=body.namespace,
            name=body.name,
            spec=body.spec,
            labels=body.labels,
            annotations=body.annotations,
            by=by,
        )

    @router.get("/{namespace}/{name}", response_model=public, name=f"read {kind_name}")
    def read(session: SessionDep, _: Reader, namespace: str, name: str) -> Any:
        return found(session, kind, namespace, name)

    @router.put("/{namespace}/{name}", response_model=public, name=f"update {kind_name}")
    def replace(session: SessionDep, by: Writer, namespace: str, name: str, data: update_model) -> Any:  # type: ignore[valid-type]
        body = cast(Any, data)
        row = found(session, kind, namespace, name)
        version = body.resource_version
        return crud.update(
            session,
            kind=kind,
            row=row,
            spec=body.spec,
            resource_version=version,
            labels=body.labels,
            annotations=body.annotations,
            by=by,
        )

    @router.delete("/{namespace}/{name}", status_code=status.HTTP_204_NO_CONTENT, name=f"delete {kind_name}")
    def remove(session: SessionDep, by: Writer, namespace: str, name: str) -> None:
        crud.delete(session, kind=kind, row=found(session, kind, namespace, name), by=by)

    return router


#: In registry order (the OpenAPI document's order).
routers = [spec_router(kind) for kind in KINDS if kind.spec_api]
