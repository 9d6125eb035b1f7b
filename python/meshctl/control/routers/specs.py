"""One router per spec resource kind (Gateway, HTTPRoute, TCPRoute, TrafficPolicy, AuthorizationPolicy),
made by one factory since they share their shape: references are checked
and a revision is recorded on every write."""

# No `from __future__ import annotations`: FastAPI reads these handlers'
# annotations, which name the factory's arguments, at decoration time.

from typing import Any, cast

from fastapi import APIRouter, status
from pydantic import BaseModel

from meshctl.control import crud
from meshctl.control.deps import Admin, Reader, SessionDep
from meshctl.control.models import (
    AuthorizationPolicyCreate,
    AuthorizationPolicyPublic,
    AuthorizationPolicyUpdate,
    GatewayCreate,
    GatewayPublic,
    GatewayUpdate,
    HTTPRouteCreate,
    HTTPRoutePublic,
    HTTPRouteUpdate,
    TCPRouteCreate,
    TCPRoutePublic,
    TCPRouteUpdate,
    TrafficPolicyCreate,
    TrafficPolicyPublic,
    TrafficPolicyUpdate,
)
from meshctl.control.routers.common import found


def spec_router(
    kind: str, path: str, create_model: type[BaseModel], update_model: type[BaseModel], public: type
) -> APIRouter:
    model = crud.KINDS[kind]
    router = APIRouter(prefix=f"/api/v1/{path}", tags=[path])

    @router.get("", response_model=list[public], name=f"list {kind}")  # type: ignore[valid-type]
    def list_all(session: SessionDep, _: Reader, namespace: str | None = None) -> Any:
        return crud.list_all(session, model, namespace=namespace)

    @router.post("", response_model=public, status_code=status.HTTP_201_CREATED, name=f"create {kind}")
    def create(session: SessionDep, _: Admin, data: create_model) -> Any:  # type: ignore[valid-type]
        body = cast(Any, data)
        return crud.create_spec(session, kind, namespace=body.namespace, name=body.name, spec=body.spec)

    @router.get("/{namespace}/{name}", response_model=public, name=f"read {kind}")
    def read(session: SessionDep, _: Reader, namespace: str, name: str) -> Any:
        return found(session, model, kind, namespace, name)

    @router.put("/{namespace}/{name}", response_model=public, name=f"update {kind}")
    def replace(session: SessionDep, _: Admin, namespace: str, name: str, data: update_model) -> Any:  # type: ignore[valid-type]
        body = cast(Any, data)
        row = found(session, model, kind, namespace, name)
        return crud.update_spec(session, kind, row=row, spec=body.spec, resource_version=body.resource_version)

    @router.delete("/{namespace}/{name}", status_code=status.HTTP_204_NO_CONTENT, name=f"delete {kind}")
    def remove(session: SessionDep, _: Admin, namespace: str, name: str) -> None:
        crud.delete(session, found(session, model, kind, namespace, name), kind=kind)

    return router


gateways = spec_router("Gateway", "gateways", GatewayCreate, GatewayUpdate, GatewayPublic)
http_routes = spec_router("HTTPRoute", "httproutes", HTTPRouteCreate, HTTPRouteUpdate, HTTPRoutePublic)
tcp_routes = spec_router("TCPRoute", "tcproutes", TCPRouteCreate, TCPRouteUpdate, TCPRoutePublic)
traffic_policies = spec_router(
    "TrafficPolicy", "trafficpolicies", TrafficPolicyCreate, TrafficPolicyUpdate, TrafficPolicyPublic
)
authorization_policies = spec_router(
    "AuthorizationPolicy",
    "authorizationpolicies",
    AuthorizationPolicyCreate,
    AuthorizationPolicyUpdate,
    AuthorizationPolicyPublic,
)
