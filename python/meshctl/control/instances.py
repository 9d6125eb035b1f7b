"""Instances: endpoints and the sidecars in front of them. They come and go
with heartbeats: runtime state, not config, so they stay out of the revision
log; joining or leaving still raises the mesh generation.

A sidecar that probes its app reports its health with each heartbeat: its
endpoint is in snapshots only while that is "healthy" (or None: no check), and
a heartbeat that moves it in or out raises the generation (see `serves`)."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, case, func, or_, update
from sqlmodel import Session, col, select

from meshctl.control.crud import bump
from meshctl.control.kinds.common import now
from meshctl.control.kinds.service import Service
from meshctl.control.models import Endpoint, EndpointRegister, Sidecar, SidecarRegister, SidecarReport

# === endpoints ===


def serves(health: str | None) -> bool:
    """Whether an instance whose app reports `health` is an endpoint in snapshots."""
    return health is None or health == "healthy"


def serving() -> ColumnElement[bool]:
    """`serves` in SQL, for a query of Endpoint outer-joined to its sidecar (`with_sidecar`)."""
    return or_(col(Sidecar.health).is_(None), col(Sidecar.health) == "healthy")


def with_sidecar() -> ColumnElement[bool]:
    """How an endpoint joins the sidecar that registered it (none for one registered through the
    endpoints API): same service, address and port."""
    return and_(
        col(Sidecar.service_id) == col(Endpoint.service_id),
        col(Sidecar.address) == col(Endpoint.address),
        col(Sidecar.inbound_port) == col(Endpoint.port),
    )


def reported_health(svc: Service, data: SidecarRegister) -> str | None:
    """The health an instance is taken to have: what its sidecar says, except that None (no check)
    from an instance of a Service that has a healthCheck is "unknown": the sidecar learns of the
    check from this registration's answer and has not probed yet."""
    if data.gateway or data.health is not None or not svc.health_check:
        return data.health
    return "unknown"


def endpoint_health(session: Session, *, svc: Service) -> dict[tuple[str, int], str | None]:
    """(address, port) -> the health its sidecar reported, for the service's sidecars."""
    rows = session.exec(
        select(Sidecar.address, Sidecar.inbound_port, Sidecar.health).where(Sidecar.service_id == svc.id)
    ).all()
    return {(address, port): health for address, port, health in rows}


def endpoint_at(session: Session, *, svc: Service, address: str, port: int) -> Endpoint | None:
    """The service's endpoint at this address and port, live or not."""
    q = select(Endpoint).where(Endpoint.service_id == svc.id, Endpoint.address == address, Endpoint.port == port)
    return session.exec(q).first()


def _upsert_endpoint(session: Session, *, svc: Service, address: str, port: int, data: EndpointRegister) -> Endpoint:
    ep = endpoint_at(session, svc=svc, address=address, port=port)
    if ep is None:
        assert svc.id is not None
        ep = Endpoint(service_id=svc.id, address=address, port=port, expires_at=now())
    was = (ep.expires_at > now(), ep.weight, ep.labels) if ep.id is not None else None
    ep.refresh(data)
    if was != (True, ep.weight, ep.labels):
        bump(session)
    session.add(ep)
    return ep


def register_endpoint(session: Session, *, svc: Service, data: EndpointRegister) -> Endpoint:
    ep = _upsert_endpoint(session, svc=svc, address=data.address, port=data.port, data=data)
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
    bump(session)
    session.commit()
    return True


def live_endpoints_digest(session: Session) -> str:
    """Changes whenever an endpoint joins or expires (expiry happens without a write)."""
    ids = session.exec(select(Endpoint.id).where(col(Endpoint.expires_at) > now()).order_by(col(Endpoint.id))).all()
    return hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()


def resume_leases(session: Session) -> timedelta:
    """At start-up: the registrations that were live when this control plane last heard from a
    sidecar get back the time they had left then; the returned gap (the time since) did not count
    against them. Without this, a restart after an outage longer than a registration's TTL finds
    every endpoint expired, and the first snapshots (one per heartbeat coming back) name only the
    instances heard from so far: their callers fail the rest for a few seconds. An instance that
    went away during the outage is taken for live for at most its TTL (its callers' connect-failure
    retries and outlier detection cover that); a registration that had expired before is left
    alone. With another control plane on the same database, the last heartbeat is seconds old
    and almost nothing moves."""
    last_heard = session.exec(select(func.max(Sidecar.last_seen))).one()
    if last_heard is None:
        return timedelta(0)
    if last_heard.tzinfo is None:  # (SQLite hands back naive UTC)
        last_heard = last_heard.replace(tzinfo=now().tzinfo)
    gap = now() - last_heard
    if gap <= timedelta(0):
        return timedelta(0)
    rows: list[Endpoint | Sidecar] = [
        *session.exec(select(Endpoint).where(col(Endpoint.expires_at) > last_heard)).all(),
        *session.exec(select(Sidecar).where(col(Sidecar.expires_at) > last_heard)).all(),
    ]
    for row in rows:
        row.expires_at = row.expires_at + gap
        session.add(row)
    session.commit()
    return gap


# === sidecars ===


def find_sidecar(session: Session, *, svc: Service, address: str, inbound_port: int) -> Sidecar | None:
    """The sidecar whose endpoint is this address and inbound port, as registered (live or not)."""
    return session.exec(
        select(Sidecar).where(
            Sidecar.service_id == svc.id,
            Sidecar.address == address,
            Sidecar.inbound_port == inbound_port,
            col(Sidecar.gateway).is_(False),
        )
    ).first()


def instance_key(data: SidecarRegister) -> str:
    """The key of a registration: its instance id, or "address:inbound_port" without one (what a
    member older than instance ids is known by; migration 0017 gave the rows of before that)."""
    return data.instance or f"{data.address}:{data.inbound_port}"


def find_registered(session: Session, *, svc: Service, data: SidecarRegister) -> Sidecar | None:
    """The row a registration updates: its instance's; else the one it takes the place of. For a
    sidecar, that is the one at its endpoint (an instance restarted with a new id, or one that
    sent none before); for a gateway with an id, the row it had before it sent one (keyed by its
    address: the first gateway there to send an id takes it, with the token it joined with)."""
    key = instance_key(data)
    found = session.exec(select(Sidecar).where(Sidecar.service_id == svc.id, Sidecar.instance == key)).first()
    if found is not None or data.instance is None:
        return found
    if not data.gateway:
        return find_sidecar(session, svc=svc, address=data.address, inbound_port=data.inbound_port)
    legacy = f"{data.address}:0"
    return session.exec(select(Sidecar).where(Sidecar.service_id == svc.id, Sidecar.instance == legacy)).first()


def _make_room(session: Session, *, svc: Service, sc: Sidecar, data: SidecarRegister) -> None:
    """Before a sidecar's row takes its (new) endpoint: the endpoint it leaves goes, and another
    row at the new one (an instance gone from there) is removed."""
    if data.gateway:
        return
    if sc.id is not None and (sc.address, sc.inbound_port) != (data.address, data.inbound_port):
        old = endpoint_at(session, svc=svc, address=sc.address, port=sc.inbound_port)
        if old is not None:
            session.delete(old)
            bump(session)
    other = find_sidecar(session, svc=svc, address=data.address, inbound_port=data.inbound_port)
    if other is not None and other.id != sc.id:
        session.delete(other)
    session.flush()


def joined_with(session: Session, *, token_id: int) -> bool:
    """Whether some recorded sidecar registered (last) with this token."""
    return session.exec(select(Sidecar.id).where(Sidecar.token_id == token_id).limit(1)).first() is not None


def register_sidecar(session: Session, *, svc: Service, data: SidecarRegister, token_id: int | None = None) -> Sidecar:
    """Registration and heartbeat in one: the sidecar's row (keyed by its instance, see
    `find_registered`) and its endpoint (the inbound listener). `token_id` is the token it
    registered with (the latest heartbeat's)."""
    sc = find_registered(session, svc=svc, data=data)
    if sc is None:
        assert svc.id is not None
        sc = Sidecar(
            service_id=svc.id,
            instance=instance_key(data),
            address=data.address,
            inbound_port=data.inbound_port,
            app_port=data.app_port,
        )
    _make_room(session, svc=svc, sc=sc, data=data)
    sc.instance, sc.address, sc.inbound_port = instance_key(data), data.address, data.inbound_port
    sc.app_port, sc.upstreams = data.app_port, data.upstreams
    sc.http_proxy_port, sc.admin_port = data.http_proxy_port, data.admin_port
    sc.svid_expires_at, sc.zone = data.svid_expires_at, data.zone
    sc.version = data.version
    sc.transparent = data.transparent.model_dump() if data.transparent else None
    sc.endpoint_health = data.health_report()
    health = reported_health(svc, data)
    if sc.id is not None and not data.gateway and serves(sc.health) != serves(health):
        bump(session)  # in or out of every snapshot now (a new one's endpoint bumps as it joins)
    sc.health = health
    sc.last_seen, sc.token_id = now(), token_id
    if data.gateway:  # the edge: nobody routes to it, so it is no endpoint of its service
        sc.gateway = True
        sc.expires_at = now() + timedelta(seconds=data.ttl_seconds)
        session.add(sc)
        session.commit()
        session.refresh(sc)
        return sc
    ep = _upsert_endpoint(
        session,
        svc=svc,
        address=data.address,
        port=data.inbound_port,
        data=EndpointRegister(
            address=data.address,
            port=data.inbound_port,
            weight=data.weight,
            labels=data.endpoint_labels(),
            ttl_seconds=data.ttl_seconds,
        ),
    )
    sc.expires_at = ep.expires_at
    session.add(sc)
    session.commit()
    session.refresh(sc)
    return sc


def report(session: Session, *, sidecar: Sidecar, data: SidecarReport) -> Sidecar:
    if data.error is None:
        sidecar.acked_version, sidecar.last_error = data.version, None
    else:
        sidecar.nacked_version, sidecar.last_error = data.version, data.error
    sidecar.last_seen = now()
    session.add(sidecar)
    session.commit()
    session.refresh(sidecar)
    return sidecar


def record_acks(session: Session, acks: dict[int, int]) -> None:
    """Many sidecars' ACKs in one statement run for each (executemany): an ACK never lowers
    the acked version, and one newer than the last NACK clears its error."""
    if not acks:
        return
    # (not "version": that is a column of the table, and SQLAlchemy reserves column names in SET)
    version: Any = bindparam("acked")
    acked = col(Sidecar.acked_version)
    nacked = col(Sidecar.nacked_version)
    statement = (
        update(Sidecar)
        .where(col(Sidecar.id) == bindparam("sidecar"))
        .values(
            acked_version=case((acked.is_(None) | (acked < version), version), else_=acked),
            last_error=case((nacked.is_not(None) & (nacked < version), None), else_=col(Sidecar.last_error)),
            last_seen=bindparam("seen"),
        )
        .execution_options(synchronize_session=False)
    )
    stamp = now()
    session.connection().execute(statement, [{"sidecar": i, "acked": v, "seen": stamp} for i, v in acks.items()])
    session.commit()


def carry_nacks(session: Session, nacks: dict[int, tuple[int, str]]) -> None:
    """NACKs carried to a newer generation (the config it refused is that generation's too): the
    sidecar's nacked version moves there, when nothing newer was reported since."""
    for sidecar_id, (version, error) in nacks.items():
        sc = session.get(Sidecar, sidecar_id)
        if sc is not None and (sc.nacked_version or -1) < version and (sc.acked_version or -1) < version:
            sc.nacked_version, sc.last_error = version, error
            session.add(sc)
    session.commit()


def list_sidecars(session: Session, *, namespace: str | None = None) -> list[tuple[Sidecar, Service]]:
    q = select(Sidecar, Service).where(Sidecar.service_id == Service.id)
    if namespace:
        q = q.where(Service.namespace == namespace)
    q = q.order_by(col(Service.namespace), col(Service.name), col(Sidecar.address), col(Sidecar.inbound_port))
    return [(sc, svc) for sc, svc in session.exec(q).all()]


def live_sidecars(session: Session, *, namespace: str, name: str) -> list[Sidecar]:
    """The live sidecars of one service (gateways included)."""
    q = (
        select(Sidecar)
        .where(Sidecar.service_id == Service.id, Service.namespace == namespace, Service.name == name)
        .where(col(Sidecar.expires_at) > now())
        .order_by(col(Sidecar.id))
    )
    return list(session.exec(q).all())


def deregister_sidecar(session: Session, *, sidecar: Sidecar, svc: Service, keep: bool = False) -> None:
    """The sidecar and its endpoint leave. `keep`: its row stays, no longer live, so that the
    same instance may register again with the expired join token it joined with."""
    ep = endpoint_at(session, svc=svc, address=sidecar.address, port=sidecar.inbound_port)
    if ep is not None:
        session.delete(ep)
        bump(session)
    if keep:
        sidecar.expires_at = now()
        session.add(sidecar)
    else:
        session.delete(sidecar)
    session.commit()
