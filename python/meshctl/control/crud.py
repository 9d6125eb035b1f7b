"""Writes and reads of resources. Each write is one transaction that records
a mesh-wide revision (what changed, before and after) and bumps the mesh
generation that sidecar snapshots are versioned by."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy import insert, update
from sqlmodel import Session, SQLModel, col, select

from meshctl.control.errors import Conflict, Invalid
from meshctl.control.models import (
    ApiToken,
    ApplyDocument,
    ApplyResult,
    AuthorizationPolicy,
    AuthorizationPolicySpec,
    Gateway,
    GatewaySpec,
    HTTPRoute,
    HTTPRouteSpec,
    MeshState,
    MtlsMode,
    Revision,
    Service,
    ServiceCreate,
    ServicePort,
    ServiceUpdate,
    TCPRoute,
    TCPRouteSpec,
    TrafficPolicy,
    TrafficPolicySpec,
    now,
)

#: Versioned resource kinds by table model, in the order apply writes them (services first,
#: so that routes and policies may name them). A kind's spec is what revisions record of it:
#: the `spec` column, or for a Service {"ports", "mtls"} (see `spec_of`).
KINDS: dict[str, Any] = {
    "Service": Service,
    "Gateway": Gateway,
    "HTTPRoute": HTTPRoute,
    "TCPRoute": TCPRoute,
    "TrafficPolicy": TrafficPolicy,
    "AuthorizationPolicy": AuthorizationPolicy,
}
SPECS: dict[str, type[BaseModel]] = {
    "Gateway": GatewaySpec,
    "HTTPRoute": HTTPRouteSpec,
    "TCPRoute": TCPRouteSpec,
    "TrafficPolicy": TrafficPolicySpec,
    "AuthorizationPolicy": AuthorizationPolicySpec,
}

Resource = Service | Gateway | HTTPRoute | TCPRoute | TrafficPolicy | AuthorizationPolicy
Loc = list[str | int]


def key(row: Any) -> str:
    return f"{row.namespace}/{row.name}"


# === a resource's spec, as revisions record it ===


def spec_of(row: Any) -> Any:
    """What revisions record of a resource (and rollbacks restore)."""
    if isinstance(row, Service):
        return {"ports": row.ports, "mtls": row.mtls}
    return row.spec


def columns(kind: str, spec: Any) -> dict[str, Any]:
    """The column values that hold `spec` (a `spec_of` value)."""
    if kind == "Service":
        return {"ports": spec["ports"], "mtls": spec.get("mtls", "STRICT")}
    return {"spec": spec}


def service_spec(ports: list[ServicePort], mtls: MtlsMode) -> dict[str, Any]:
    return {"ports": [p.model_dump() for p in ports], "mtls": mtls}


# === generation: what sidecar snapshots are versioned by ===


def generation(session: Session) -> int:
    value = session.execute(select(MeshState.generation).where(col(MeshState.id) == 1)).scalar_one_or_none()
    return int(value or 0)


def bump(session: Session) -> int:
    """Raise the generation in this transaction; the caller's commit publishes it.

    One UPDATE ... SET generation = generation + 1: it takes the row's write
    lock, so concurrent writers queue instead of both writing the same number
    (which would let the generation go backwards)."""
    raised = session.execute(
        update(MeshState).where(col(MeshState.id) == 1).values(generation=col(MeshState.generation) + 1)
    )
    if raised.rowcount == 0:  # type: ignore[attr-defined]
        session.add(MeshState(id=1, generation=1))
        session.flush()
    value = session.execute(select(MeshState.generation).where(col(MeshState.id) == 1)).scalar_one()
    session.info["generation"] = value
    return int(value)


# === revisions ===


def current_state(session: Session) -> dict[str, dict[str, Any]]:
    state: dict[str, dict[str, Any]] = {}
    for kind, model in KINDS.items():
        rows = session.exec(select(model).order_by(col(model.namespace), col(model.name))).all()
        state[kind] = {key(r): spec_of(r) for r in rows}
    return state


def record_revision(session: Session, *, action: str, kind: str, name: str, changes: list[dict[str, Any]]) -> None:
    session.add(Revision(action=action, kind=kind, name=name, changes=changes))
    bump(session)


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


def _check_version(row: Resource, kind: str, version: int | None) -> None:
    if version is not None and version != row.resource_version:
        raise Conflict(
            f"{kind} {key(row)} is at resource_version {row.resource_version}, not {version}: read it again and reapply"
        )


def _write(session: Session, kind: str, row: Resource | None, namespace: str, name: str, spec: Any) -> Resource:
    """Create or change one resource in the session; no commit, no revision."""
    if row is None:
        row = KINDS[kind](namespace=namespace, name=name, **columns(kind, spec))
    else:
        for column, value in columns(kind, spec).items():
            setattr(row, column, value)
        row.resource_version += 1
        row.updated_at = now()
    session.add(row)
    return row


def _commit(session: Session, row: Resource, *, kind: str, action: str, before: Any) -> Any:
    session.flush()
    after = spec_of(row)
    record_revision(
        session,
        action=action,
        kind=kind,
        name=key(row),
        changes=[{"kind": kind, "name": key(row), "before": before, "after": after}],
    )
    session.commit()
    session.refresh(row)
    return row


def delete(session: Session, row: Resource, *, kind: str) -> None:
    if isinstance(row, Service):
        users = [f"{k} {key(r)}" for k, r in _users_of(session, row.namespace, row.name)]
        if users:
            raise Conflict(f"service {key(row)} is used by {', '.join(users)}")
        for token in session.exec(select(ApiToken).where(ApiToken.role == "join", ApiToken.scope == key(row))).all():
            session.delete(token)  # its sidecars' tokens go with it
    if isinstance(row, Gateway):
        routes = [f"HTTPRoute {key(r)}" for r in _routes_on(session, row.namespace, row.name)]
        if routes:
            raise Conflict(f"gateway {key(row)} is used by {', '.join(routes)}")
    before = spec_of(row)
    session.delete(row)
    session.flush()
    record_revision(
        session,
        action="delete",
        kind=kind,
        name=key(row),
        changes=[{"kind": kind, "name": key(row), "before": before, "after": None}],
    )
    session.commit()


# === services ===


def create_service(session: Session, *, data: ServiceCreate) -> Service:
    if get(session, Service, namespace=data.namespace, name=data.name):
        raise Conflict(f"service {data.namespace}/{data.name} already exists")
    spec = service_spec(data.ports, data.mtls)
    row = _write(session, "Service", None, data.namespace, data.name, spec)
    return _commit(session, row, kind="Service", action="create", before=None)  # type: ignore[no-any-return]


def update_service(session: Session, *, svc: Service, data: ServiceUpdate) -> Service:
    _check_version(svc, "service", data.resource_version)
    before = spec_of(svc)
    _write(session, "Service", svc, svc.namespace, svc.name, service_spec(data.ports, data.mtls))
    return _commit(session, svc, kind="Service", action="update", before=before)  # type: ignore[no-any-return]


# === spec resources: routes and policies ===


def references(kind: str, spec: Any, namespace: str, name: str | None = None) -> list[tuple[Loc, str, str]]:
    """Every service a spec names: (location in the spec, namespace, name). A Gateway names the
    Service of its own name (its instances join as that service): located at `["metadata", "name"]`."""
    if isinstance(spec, TrafficPolicySpec | AuthorizationPolicySpec):
        return [(["targetRef"], spec.target_ref.namespace or namespace, spec.target_ref.name)]
    if isinstance(spec, GatewaySpec):
        assert name is not None, "a Gateway's reference is its own name"
        return [(["metadata", "name"], namespace, name)]
    assert isinstance(spec, HTTPRouteSpec | TCPRouteSpec), kind
    refs: list[tuple[Loc, str, str]] = [
        (["parentRefs", i], p.namespace or namespace, p.name)
        for i, p in enumerate(spec.parent_refs)
        if not getattr(p, "is_gateway", False)
    ]
    rules: list[Any] = spec.rules
    for r, rule in enumerate(rules):
        for b, backend in enumerate(rule.backend_refs):
            refs.append((["rules", r, "backendRefs", b], backend.namespace or namespace, backend.name))
    return refs


def gateway_parents(spec: HTTPRouteSpec, namespace: str) -> list[tuple[int, str, str | None]]:
    """(parentRefs index, Gateway "ns/name", sectionName) of each Gateway parent of a route."""
    return [
        (i, f"{p.namespace or namespace}/{p.name}", p.section_name)
        for i, p in enumerate(spec.parent_refs)
        if p.is_gateway
    ]


def _users_of(session: Session, namespace: str, name: str) -> list[tuple[str, Any]]:
    users = []
    for kind, spec_model in SPECS.items():
        for row in list_all(session, KINDS[kind]):
            spec = spec_model.model_validate(row.spec)
            refs = references(kind, spec, row.namespace, row.name)
            if any(ns == namespace and n == name for _, ns, n in refs):
                users.append((kind, row))
    return users


def _routes_on(session: Session, namespace: str, name: str) -> list[HTTPRoute]:
    """The HTTPRoutes attached to Gateway namespace/name."""
    target = f"{namespace}/{name}"
    return [
        row
        for row in list_all(session, HTTPRoute)
        if any(g == target for _, g, _ in gateway_parents(HTTPRouteSpec.model_validate(row.spec), row.namespace))
    ]


class _RefChecker:
    """Checks references against the services in the session (read once, so that checking
    thousands of documents costs thousands of set lookups, not queries)."""

    def __init__(self, session: Session):
        self.session = session
        self.services = {key(s) for s in list_all(session, Service)}
        #: Gateway "ns/name" -> its listeners' names.
        self.gateways = {
            key(g): {item["name"] for item in g.spec.get("listeners", [])} for g in list_all(session, Gateway)
        }
        self._sections: dict[str, list[tuple[str, int, str]]] | None = None
        self.policy_targets: dict[tuple[str, str], str] = {}
        for p in list_all(session, TrafficPolicy):
            target = TrafficPolicySpec.model_validate(p.spec).target_ref
            self.policy_targets[(target.namespace or p.namespace, target.name)] = key(p)

    def sections(self) -> dict[str, list[tuple[str, int, str]]]:
        """Gateway "ns/name" -> (HTTPRoute "ns/name", parentRefs index, sectionName) naming its listeners."""
        if self._sections is None:
            self._sections = {}
            for row in list_all(self.session, HTTPRoute):
                for i, gateway, section in gateway_parents(HTTPRouteSpec.model_validate(row.spec), row.namespace):
                    if section is not None:
                        self._sections.setdefault(gateway, []).append((key(row), i, section))
        return self._sections

    def check(
        self, kind: str, spec: Any, namespace: str, name: str, at: Loc, name_at: Loc | None = None
    ) -> list[dict[str, Any]]:
        """Every reference must name an existing service (or gateway); one policy per target service.
        `name_at` is where the resource's own name was given (a Gateway's reference)."""
        errors = []
        for loc, ns, ref in references(kind, spec, namespace, name):
            if f"{ns}/{ref}" not in self.services:
                if isinstance(spec, GatewaySpec):
                    msg = f"service {ns}/{ref} does not exist: a Gateway's instances join as the Service of its name"
                    errors.append({"loc": name_at or [*at[:-1], *loc], "msg": msg, "type": "reference"})
                    continue
                msg = f"service {ns}/{ref} does not exist"
                errors.append({"loc": [*at, *loc, "name"], "msg": msg, "type": "reference"})
        if isinstance(spec, HTTPRouteSpec):
            for i, gateway, section in gateway_parents(spec, namespace):
                loc = [*at, "parentRefs", i]
                if gateway not in self.gateways:
                    msg = f"gateway {gateway} does not exist"
                    errors.append({"loc": [*loc, "name"], "msg": msg, "type": "reference"})
                elif section is not None and section not in self.gateways[gateway]:
                    msg = f"gateway {gateway} has no listener {section!r}"
                    errors.append({"loc": [*loc, "sectionName"], "msg": msg, "type": "reference"})
        if isinstance(spec, GatewaySpec):
            errors += [{"loc": [*at, *loc], "msg": msg, "type": "value_error"} for loc, msg in spec.problems()]
            listeners = {item.name for item in spec.listeners}
            for route, i, section in self.sections().get(f"{namespace}/{name}", []):
                if section not in listeners:
                    msg = f"HTTPRoute {route} attaches to listener {section!r} (parentRefs[{i}].sectionName)"
                    errors.append({"loc": [*at, "listeners"], "msg": msg, "type": "reference"})
        if isinstance(spec, TrafficPolicySpec):
            target = (spec.target_ref.namespace or namespace, spec.target_ref.name)
            holder = self.policy_targets.setdefault(target, f"{namespace}/{name}")
            if holder != f"{namespace}/{name}":
                raise Conflict(f"service {target[0]}/{target[1]} already has TrafficPolicy {holder}")
        return errors


def _check_refs(
    session: Session, kind: str, spec: Any, namespace: str, name: str, at: Loc, name_at: Loc
) -> list[dict[str, Any]]:
    return _RefChecker(session).check(kind, spec, namespace, name, at, name_at)


def create_spec(session: Session, kind: str, *, namespace: str, name: str, spec: BaseModel) -> Any:
    model = KINDS[kind]
    if get(session, model, namespace=namespace, name=name):
        raise Conflict(f"{kind} {namespace}/{name} already exists")
    if errors := _check_refs(session, kind, spec, namespace, name, ["body", "spec"], ["body", "name"]):
        raise Invalid(errors)
    row = _write(session, kind, None, namespace, name, spec.model_dump(by_alias=True, exclude_none=True))
    return _commit(session, row, kind=kind, action="create", before=None)


def update_spec(session: Session, kind: str, *, row: Any, spec: BaseModel, resource_version: int) -> Any:
    _check_version(row, kind, resource_version)
    if errors := _check_refs(session, kind, spec, row.namespace, row.name, ["body", "spec"], ["path", "name"]):
        raise Invalid(errors)
    before = row.spec
    _write(session, kind, row, row.namespace, row.name, spec.model_dump(by_alias=True, exclude_none=True))
    return _commit(session, row, kind=kind, action="update", before=before)


# === apply: many documents, one transaction, one revision ===


def _validated(doc: ApplyDocument, at: Loc) -> tuple[Any, list[dict[str, Any]]]:
    spec_model: type[BaseModel] = SPECS.get(doc.kind, _ServiceSpec)
    try:
        return spec_model.model_validate(doc.spec), []
    except ValidationError as e:
        return None, [{"loc": [*at, "spec", *err["loc"]], "msg": err["msg"], "type": err["type"]} for err in e.errors()]


class _ServiceSpec(BaseModel):
    ports: list[ServicePort] = []
    mtls: MtlsMode = "STRICT"


def apply(session: Session, *, documents: list[ApplyDocument], dry_run: bool = False) -> list[ApplyResult]:
    """Creates or updates every document (services first, so routes may name them),
    all or nothing. Unchanged documents are reported and not rewritten."""
    errors: list[dict[str, Any]] = []
    parsed = []
    seen: set[tuple[str, str]] = set()
    for i, doc in enumerate(documents):
        at: Loc = ["body", "documents", i]
        ident = (doc.kind, f"{doc.metadata.namespace}/{doc.metadata.name}")
        if ident in seen:
            errors.append(
                {"loc": [*at, "metadata", "name"], "msg": f"{ident[0]} {ident[1]} is given twice", "type": "duplicate"}
            )
        seen.add(ident)
        spec, errs = _validated(doc, at)
        errors += errs
        parsed.append((i, doc, spec))
    if errors:
        raise Invalid(errors)

    order = list(KINDS)
    parsed.sort(key=lambda p: (order.index(p[1].kind), p[0]))
    stored = {kind: {key(r): r for r in list_all(session, KINDS[kind])} for kind in {d.kind for d in documents}}
    results: dict[int, ApplyResult] = {}
    changes: list[dict[str, Any]] = []
    inserts: dict[str, list[dict[str, Any]]] = {}
    for i, doc, spec in parsed:
        meta = doc.metadata
        row = stored[doc.kind].get(f"{meta.namespace}/{meta.name}")
        value = (
            service_spec(spec.ports, spec.mtls)
            if doc.kind == "Service"
            else spec.model_dump(by_alias=True, exclude_none=True)
        )
        name = f"{meta.namespace}/{meta.name}"
        if row is not None:
            _check_version(row, doc.kind, meta.resource_version)
        before = spec_of(row) if row is not None else None
        if row is not None and before == value:
            results[i] = ApplyResult(kind=doc.kind, name=name, action="unchanged")
            continue
        if row is None:  # new rows go in one multi-row INSERT per kind: ORM objects cost ~0.2 ms each
            stamp = now()
            inserts.setdefault(doc.kind, []).append(
                {
                    "namespace": meta.namespace,
                    "name": meta.name,
                    **columns(doc.kind, value),
                    "resource_version": 1,
                    "created_at": stamp,
                    "updated_at": stamp,
                }
            )
        else:
            _write(session, doc.kind, row, meta.namespace, meta.name, value)
        changes.append({"kind": doc.kind, "name": name, "before": before, "after": value})
        results[i] = ApplyResult(kind=doc.kind, name=name, action="created" if row is None else "configured")
    session.flush()
    for kind in order:
        if kind in inserts:
            session.execute(insert(KINDS[kind]), inserts[kind])
    checker = _RefChecker(session)
    for i, doc, spec in parsed:
        if doc.kind in SPECS:
            meta = doc.metadata
            where: Loc = ["body", "documents", i]
            errors += checker.check(
                doc.kind, spec, meta.namespace, meta.name, [*where, "spec"], [*where, "metadata", "name"]
            )
    if errors:
        session.rollback()
        raise Invalid(errors)
    if dry_run or not changes:
        session.rollback()
    else:
        what = changes[0]["name"] if len(changes) == 1 else f"{len(changes)} resources"
        record_revision(
            session, action="apply", kind=changes[0]["kind"] if len(changes) == 1 else "*", name=what, changes=changes
        )
        session.commit()
    return [results[i] for i in range(len(documents))]
