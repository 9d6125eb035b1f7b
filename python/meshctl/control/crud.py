"""Writes and reads of resources. Each write is one transaction that also
records a mesh-wide revision holding the full resource set after it."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from meshctl.control.models import Revision, Service, ServiceCreate, ServiceUpdate, now


class Conflict(Exception):
    """The write is based on a stale resource_version, or the resource exists."""


def _state(session: Session) -> dict[str, Any]:
    services = session.exec(select(Service).order_by(Service.namespace, Service.name)).all()
    return {"services": [{"namespace": s.namespace, "name": s.name, "ports": s.ports} for s in services]}


def _record(session: Session, *, action: str, kind: str, name: str) -> None:
    session.flush()
    session.add(Revision(action=action, kind=kind, name=name, state=_state(session)))


def get_service(session: Session, *, namespace: str, name: str) -> Service | None:
    return session.exec(select(Service).where(Service.namespace == namespace, Service.name == name)).first()


def list_services(session: Session, *, namespace: str | None = None) -> list[Service]:
    q = select(Service).order_by(Service.namespace, Service.name)
    if namespace:
        q = q.where(Service.namespace == namespace)
    return list(session.exec(q).all())


def create_service(session: Session, *, data: ServiceCreate) -> Service:
    if get_service(session, namespace=data.namespace, name=data.name):
        raise Conflict(f"service {data.namespace}/{data.name} already exists")
    svc = Service(name=data.name, namespace=data.namespace, ports=[p.model_dump() for p in data.ports])
    session.add(svc)
    _record(session, action="create", kind="Service", name=f"{svc.namespace}/{svc.name}")
    session.commit()
    session.refresh(svc)
    return svc


def update_service(session: Session, *, svc: Service, data: ServiceUpdate) -> Service:
    if data.resource_version != svc.resource_version:
        raise Conflict(
            f"service {svc.namespace}/{svc.name} is at resource_version {svc.resource_version}, "
            f"not {data.resource_version}: read it again and reapply"
        )
    svc.ports = [p.model_dump() for p in data.ports]
    svc.resource_version += 1
    svc.updated_at = now()
    session.add(svc)
    _record(session, action="update", kind="Service", name=f"{svc.namespace}/{svc.name}")
    session.commit()
    session.refresh(svc)
    return svc


def delete_service(session: Session, *, svc: Service) -> None:
    session.delete(svc)
    _record(session, action="delete", kind="Service", name=f"{svc.namespace}/{svc.name}")
    session.commit()


def list_revisions(session: Session) -> list[Revision]:
    return list(session.exec(select(Revision).order_by(col(Revision.id))).all())
