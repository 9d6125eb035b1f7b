"""Sidecar findings, from their rows (as of their last heartbeat and report):

- MC0101: a live sidecar whose latest report is a NACK (newer than its last ACK);
- MC0102: a live sidecar behind the mesh generation after the grace the API
  waited (see ``lagging``: the router gives behind sidecars that long to catch up);
- MC0103: a live sidecar reporting another meshctl (or data-plane) version than
  the control plane's (a sidecar that reports none is not judged);
- MC0104: a sidecar whose join token is revoked (its row is gone), while it is
  live or its SVID is still valid: it may still be serving;
- MC0105 (info): a live sidecar whose join token has expired: it keeps working
  (an expired join token serves the sidecars that joined with it), but the
  token joins no new instance;
- MC0201 / MC0202: a live sidecar's SVID expired, or with less than
  ``SVID_WARNING_SHARE`` of the control plane's SVID lifetime left (sidecars
  renew at ~70 % of it, so one this close failed to renew; a sidecar that asked
  for shorter SVIDs than the control plane's default is judged by that default).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session

from meshctl.control import crud, instances, tokens
from meshctl.control.analysis.report import Finding, finding
from meshctl.control.kinds.common import now
from meshctl.control.kinds.service import Service
from meshctl.control.models import Sidecar

#: An SVID with less than this share of the control plane's SVID lifetime left: MC0202.
SVID_WARNING_SHARE = 0.15


def nacking(sc: Sidecar) -> bool:
    """Its latest report refused a config (as `meshctl status` says NACK)."""
    return (
        bool(sc.last_error)
        and sc.nacked_version is not None
        and (sc.acked_version is None or sc.nacked_version > sc.acked_version)
    )


def lagging(session: Session) -> dict[int, int]:
    """Live sidecars behind the mesh generation and not NACKing: id -> the generation they must
    reach (the one now). The API waits for them a grace period before `analyse` judges them."""
    generation = crud.generation(session)
    return {
        sc.id: generation
        for sc, _ in instances.list_sidecars(session)
        if sc.id is not None
        and sc.expires_at > now()
        and not nacking(sc)
        and (sc.acked_version is None or sc.acked_version < generation)
    }


def token_states(session: Session, sidecars: Iterable[Sidecar]) -> tuple[set[int], dict[int, datetime]]:
    """The sidecars whose join token is gone (revoked), and those whose token has expired (with
    when). A sidecar registered before tokens were recorded (no token_id) is not judged."""
    judged = [sc for sc in sidecars if sc.token_id is not None and sc.id is not None]
    found = tokens.existing(session, {sc.token_id for sc in judged if sc.token_id is not None})
    at = now()
    revoked, expired = set(), {}
    for sc in judged:
        assert sc.id is not None and sc.token_id is not None
        token = found.get(sc.token_id)
        if token is None:
            revoked.add(sc.id)
        elif not tokens.live(token, at) and token.expires_at is not None:
            expired[sc.id] = token.expires_at
    return revoked, expired


def _versions(text: str) -> dict[str, str]:
    """ "meshctl 0.1.0 / data plane 0.1.0" -> {"meshctl": "0.1.0", "data plane": "0.1.0"}."""
    return {m[1]: m[2] for m in re.finditer(r"(meshctl|data plane)\s+([^\s/]+)", text)}


def _left(at: datetime) -> str:
    seconds = int((at - now()).total_seconds())
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def analyse(
    session: Session,
    *,
    server_version: str,
    svid_ttl: timedelta,
    stayed_behind: set[int] | None = None,
    grace: float = 0.0,
) -> list[Finding]:
    """`stayed_behind`: the sidecars still behind after the grace (None: judge every behind
    sidecar now, without grace)."""
    generation = crud.generation(session)
    rows: list[tuple[Sidecar, Service]] = instances.list_sidecars(session)
    gone_tokens, expired_tokens = token_states(session, (sc for sc, _ in rows))
    ours = {"meshctl": server_version}
    out: list[Finding] = []
    for sc, svc in rows:
        name, live, at = str(sc.id), sc.expires_at > now(), sc.svid_expires_at
        who = f"sidecar {sc.id} of {svc.namespace}/{svc.name} at {sc.address}"
        if sc.id in gone_tokens and (live or (at is not None and at > now())):
            still = "is live" if live else f"may serve until its SVID expires ({at:%Y-%m-%d %H:%M} UTC)"
            message = f"{who} joined with a join token that is revoked, and {still}"
            out.append(finding("MC0104", "Sidecar", name, message))
        if not live:
            continue
        if (expired := expired_tokens.get(sc.id or 0)) is not None:
            message = (
                f"{who} runs on join token {sc.token_id}, which expired {expired:%Y-%m-%d %H:%M} UTC: "
                "it keeps working, but that token joins no new instance"
            )
            out.append(finding("MC0105", "Sidecar", name, message))
        if nacking(sc):
            error = (sc.last_error or "")[:300]
            message = f"{who} refused mesh generation {sc.nacked_version}: {error}"
            out.append(finding("MC0101", "Sidecar", name, message))
        elif (sc.acked_version is None or sc.acked_version < generation) and (
            stayed_behind is None or sc.id in stayed_behind
        ):
            has = "has ACKed no config" if sc.acked_version is None else f"runs generation {sc.acked_version}"
            waited = f" after {grace:g}s" if grace else ""
            message = f"{who} {has}; the mesh is at {generation}{waited}"
            out.append(finding("MC0102", "Sidecar", name, message))
        reported: Any = getattr(sc, "version", None)
        if reported:
            theirs = _versions(reported)
            skew = [f"{part} {theirs[part]}" for part in ours if part in theirs and theirs[part] != ours[part]]
            if skew:
                message = f"{who} runs {reported}; the control plane runs meshctl {server_version}"
                out.append(finding("MC0103", "Sidecar", name, message))
        if at is not None:
            if at <= now():
                message = f"{who} serves with an SVID that expired {at:%Y-%m-%d %H:%M:%S} UTC"
                out.append(finding("MC0201", "Sidecar", name, message))
            elif at - now() < svid_ttl * SVID_WARNING_SHARE:
                message = f"{who}: its SVID expires in {_left(at)} ({at:%Y-%m-%d %H:%M:%S} UTC) and was not renewed"
                out.append(finding("MC0202", "Sidecar", name, message))
    return out
