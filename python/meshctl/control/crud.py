"""Writes and reads of resources. Each write is one transaction that also
records a mesh-wide revision holding the full resource set after it, so
that any two revisions can be compared and any one restored."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, SQLModel, col, select

from meshctl.control.models import (
    Change,
    Endpoint,
    EndpointRegister,
    HTTPRoute,
    HTTPRouteCreate,
    HTTPRouteSpec,
    HTTPRouteUpdate,
    Revision,
    Service,
    ServiceCreate,
    ServiceUpdate,
    now,
)

#: Versioned resource kinds: table model and the column holding their spec.
KINDS: dict[str, tuple[Any, str]] = {
    "Service": (Service, "ports"),
    "HTTPRoute": (HTTPRoute, "spec"),
}

Resource = Service | HTTPRoute


class Conflict(Exception):
    """The resource exists, is referenced, or the write is based on a stale resource_version."""


class Invalid(Exception):
    """References to things that do not exist; `errors` are FastAPI-style 422 items."""

    def __init__(self, errors: list[dict[str, Any]]):
        super().__init__("; ".join(e["msg"] for e in errors))
        self.errors = errors


# === revisions ===


def _state(session: Session) -> dict[str, dict[str, Any]]:
    state: dict[str, dict[str, Any]] = {}
    for kind, (model, field) in KINDS.items():
        rows = session.exec(select(model).order_by(col(model.namespace), col(model.name))).all()
        state[kind] = {f"{r.namespace}/{r.name}": getattr(r, field) for r in rows}
    return state


def _record(session: Session, *, action: str, kind: str, name: str) -> None:
    session.flush()
    session.add(Revision(action=action, kind=kind, name=name, state=_state(session)))


def list_revisions(session: Session) -> list[Revision]:
    return list(session.exec(select(Revision).order_by(col(Revision.id))).all())


def get_revision(session: Session, *, revision: int) -> Revision | None:
    return session.get(Revision, revision)


def diff(before: dict[str, Any], after: dict[str, Any]) -> list[Change]:
    changes = []
    for kind in KINDS:
        a, b = before.get(kind, {}), after.get(kind, {})
        for name in sorted(a.keys() | b.keys()):
            if name not in a:
                changes.append(Change(kind=kind, name=name, change="added", after={"spec": b[name]}))
            elif name not in b:
                changes.append(Change(kind=kind, name=name, change="removed", before={"spec": a[name]}))
            elif a[name] != b[name]:
                changes.append(
                    Change(kind=kind, name=name, change="changed", before={"spec": a[name]}, after={"spec": b[name]})
                )
    return changes


def rollback(session: Session, *, revision: Revision) -> Revision:
    """Makes the resources exactly what they were at `revision`, as one new revision."""
    target = revision.state
    for kind, (model, field) in KINDS.items():
        wanted = target.get(kind, {})
        for row in session.exec(select(model)).all():
            key = f"{row.namespace}/{row.name}"
            if key not in wanted:
                session.delete(row)
            elif getattr(row, field) != wanted[key]:
                setattr(row, field, wanted[key])
                row.resource_version += 1
                row.updated_at = now()
                session.add(row)
        session.flush()
        present = {f"{r.namespace}/{r.name}" for r in session.exec(select(model)).all()}
        for key in wanted.keys() - present:
            namespace, name = key.split("/", 1)
            session.add(model(namespace=namespace, name=name, **{field: wanted[key]}))
    _record(session, action="rollback", kind="Revision", name=str(revision.id))
    session.commit()
    return list_revisions(session)[-1]


# === generic named resources ===


def get(session: Session, model: type[SQLModel], *, namespace: str, name: str) -> Any:
    m: Any = model
    return session.exec(select(m).where(m.namespace == namespace, m.name == name)).first()


def list_all(session: Session, model: type[SQLModel], *, namespace: str | None = None) -> list[Any]:
    m: Any = model
    q = select(m).order_by(m.namespace, m.name)
    if namespace:
        q = q.where(m.namespace == namespace)
    return list(session.exec(q).all())


def _check_version(row: Resource, kind: str, version: int) -> None:
    if version != row.resource_version:
        raise Conflict(
            f"{kind} {row.namespace}/{row.name} is at resource_version {row.resource_version}, "
            f"not {version}: read it again and reapply"
        )


def _save(session: Session, row: Resource, *, kind: str, action: str) -> Any:
    if action == "update":
        row.resource_version += 1
        row.updated_at = now()
    session.add(row)
    _record(session, action=action, kind=kind, name=f"{row.namespace}/{row.name}")
    session.commit()
    session.refresh(row)
    return row


def delete(session: Session, row: Resource, *, kind: str) -> None:
    if isinstance(row, Service):
        users = [r for r in list_all(session, HTTPRoute) if _route_refers_to(r, row.namespace, row.name)]
        if users:
            names = ", ".join(f"{r.namespace}/{r.name}" for r in users)
            raise Conflict(f"service {row.namespace}/{row.name} is used by HTTPRoute {names}")
        for ep in session.exec(select(Endpoint).where(Endpoint.service_id == row.id)).all():
            session.delete(ep)
    session.delete(row)
    _record(session, action="delete", kind=kind, name=f"{row.namespace}/{row.name}")
    session.commit()


# === services ===


def create_service(session: Session, *, data: ServiceCreate) -> Service:
    if get(session, Service, namespace=data.namespace, name=data.name):
        raise Conflict(f"service {data.namespace}/{data.name} already exists")
    svc = Service(name=data.name, namespace=data.namespace, ports=[p.model_dump() for p in data.ports])
    return _save(session, svc, kind="Service", action="create")  # type: ignore[no-any-return]


def update_service(session: Session, *, svc: Service, data: ServiceUpdate) -> Service:
    _check_version(svc, "service", data.resource_version)
    svc.ports = [p.model_dump() for p in data.ports]
    return _save(session, svc, kind="Service", action="update")  # type: ignore[no-any-return]


# === routes ===


def _route_refers_to(route: HTTPRoute, namespace: str, name: str) -> bool:
    spec = HTTPRouteSpec.model_validate(route.spec)
    refs = [*spec.parent_refs, *(b for rule in spec.rules for b in rule.backend_refs)]
    return any((r.namespace or route.namespace) == namespace and r.name == name for r in refs)


def _check_refs(session: Session, namespace: str, spec: HTTPRouteSpec) -> None:
    """Every parentRef and backendRef must name an existing service."""
    errors: list[dict[str, Any]] = []

    def check(loc: list[str | int], ns: str | None, name: str) -> None:
        ns = ns or namespace
        if get(session, Service, namespace=ns, name=name) is None:
            errors.append({"loc": ["body", "spec", *loc, "name"], "msg": f"service {ns}/{name} does not exist",
                           "type": "reference"})  # fmt: skip

    for i, p in enumerate(spec.parent_refs):
        check(["parentRefs", i], p.namespace, p.name)
    for r, rule in enumerate(spec.rules):
        for b, backend in enumerate(rule.backend_refs):
            check(["rules", r, "backendRefs", b], backend.namespace, backend.name)
    if errors:
        raise Invalid(errors)


def create_route(session: Session, *, data: HTTPRouteCreate) -> HTTPRoute:
    if get(session, HTTPRoute, namespace=data.namespace, name=data.name):
        raise Conflict(f"HTTPRoute {data.namespace}/{data.name} already exists")
    _check_refs(session, data.namespace, data.spec)
    route = HTTPRoute(name=data.name, namespace=data.namespace, spec=data.spec.model_dump(by_alias=True))
    return _save(session, route, kind="HTTPRoute", action="create")  # type: ignore[no-any-return]


def update_route(session: Session, *, route: HTTPRoute, data: HTTPRouteUpdate) -> HTTPRoute:
    _check_version(route, "HTTPRoute", data.resource_version)
    _check_refs(session, route.namespace, data.spec)
    route.spec = data.spec.model_dump(by_alias=True)
    return _save(session, route, kind="HTTPRoute", action="update")  # type: ignore[no-any-return]


# === endpoints ===
# Instances come and go with heartbeats: they are runtime state, not config,
# so they stay out of the revision log.


def register_endpoint(session: Session, *, svc: Service, data: EndpointRegister) -> Endpoint:
    ep = session.exec(
        select(Endpoint).where(
            Endpoint.service_id == svc.id, Endpoint.address == data.address, Endpoint.port == data.port
        )
    ).first()
    if ep is None:
        assert svc.id is not None
        ep = Endpoint(service_id=svc.id, address=data.address, port=data.port, expires_at=now())
    ep.refresh(data)
    session.add(ep)
    session.commit()
    session.refresh(ep)
    return ep


def list_endpoints(session: Session, *, svc: Service, include_expired: bool = False) -> list[Endpoint]:
    q = select(Endpoint).where(Endpoint.service_id == svc.id).order_by(col(Endpoint.address), col(Endpoint.port))
    if not include_expired:
        q = q.where(col(Endpoint.expires_at) > now())
    return list(session.exec(q).all())


def delete_endpoint(session: Session, *, svc: Service, endpoint_id: int) -> bool:
    ep = session.get(Endpoint, endpoint_id)
    if ep is None or ep.service_id != svc.id:
        return False
    session.delete(ep)
    session.commit()
    return True
