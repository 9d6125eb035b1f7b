"""``GET /api/v1/version``: what the control plane runs, for ``meshctl version``
and ``meshctl check`` (any valid token, a reader's included)."""

from __future__ import annotations

from fastapi import APIRouter

from meshctl.control.deps import Reader
from meshctl.control.models import VersionInfo
from meshctl.versions import versions

router = APIRouter(prefix="/api/v1/version", tags=["health"])


@router.get("", response_model=VersionInfo)
def version(_: Reader) -> VersionInfo:
    """The control plane's meshctl, API, data-plane (its extension) and Python versions."""
    return VersionInfo(api="v1", **versions())
