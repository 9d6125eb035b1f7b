"""HTTPRoutes (Gateway API shape): references are checked on every write."""

from __future__ import annotations

from fastapi import APIRouter, status

from meshctl.control import crud
from meshctl.control.deps import Admin, Reader, SessionDep
from meshctl.control.models import HTTPRoute, HTTPRouteCreate, HTTPRoutePublic, HTTPRouteUpdate
from meshctl.control.routers.common import found

router = APIRouter(prefix="/api/v1/httproutes", tags=["httproutes"])


@router.get("", response_model=list[HTTPRoutePublic])
def list_routes(session: SessionDep, _: Reader, namespace: str | None = None) -> list[HTTPRoute]:
    return crud.list_all(session, HTTPRoute, namespace=namespace)


@router.post("", response_model=HTTPRoutePublic, status_code=status.HTTP_201_CREATED)
def create_route(session: SessionDep, _: Admin, data: HTTPRouteCreate) -> HTTPRoute:
    return crud.create_route(session, data=data)


@router.get("/{namespace}/{name}", response_model=HTTPRoutePublic)
def read_route(session: SessionDep, _: Reader, namespace: str, name: str) -> HTTPRoute:
    return found(session, HTTPRoute, "HTTPRoute", namespace, name)  # type: ignore[no-any-return]


@router.put("/{namespace}/{name}", response_model=HTTPRoutePublic)
def update_route(session: SessionDep, _: Admin, namespace: str, name: str, data: HTTPRouteUpdate) -> HTTPRoute:
    route = found(session, HTTPRoute, "HTTPRoute", namespace, name)
    return crud.update_route(session, route=route, data=data)


@router.delete("/{namespace}/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_route(session: SessionDep, _: Admin, namespace: str, name: str) -> None:
    crud.delete(session, found(session, HTTPRoute, "HTTPRoute", namespace, name), kind="HTTPRoute")
