"""CA findings, from ``CertificateAuthority.status()`` (fingerprints and dates,
never a key) and the sidecars' ACKs:

- MC0203 / MC0204: a root in the trust bundle, or the issuer that signs SVIDs,
  expired, or expiring within ``CA_WARNING`` (30 days, as the control plane
  warns at start);
- MC0205: a rotation whose new bundle some live sidecars have not ACKed for
  ``ROTATION_STUCK`` (an hour) since it started (activation waits for them);
- MC0206: a rotation ready for its next step: bundled and every live sidecar
  has ACKed (activate), or activated and safe to finish (finish);
- MC0207: a rotation activated and safe to finish (``finish_safe_after`` past)
  for ``ROTATION_STUCK``: the old root is still trusted everywhere.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from meshctl.control.analysis.report import Finding, finding
from meshctl.control.ca import CertificateAuthority
from meshctl.control.kinds.common import now
from meshctl.control.models import Sidecar

CA_WARNING = timedelta(days=30)
ROTATION_STUCK = timedelta(hours=1)


def _expiry(role: str, cert: dict[str, Any]) -> Finding | None:
    at: datetime = cert["not_after"]
    what = f"the {role} certificate {cert['subject']} ({cert['fingerprint'][:23]}...)"
    if at <= now():
        return finding("MC0203", "CA", role, f"{what} expired {at:%Y-%m-%d %H:%M} UTC")
    if at - now() < CA_WARNING:
        days = (at - now()).days
        return finding("MC0204", "CA", role, f"{what} expires {at:%Y-%m-%d %H:%M} UTC, in {days} days")
    return None


def analyse(ca: CertificateAuthority, sidecars: list[Sidecar]) -> list[Finding]:
    status = ca.status()
    out = [
        f
        for f in (
            *(_expiry(f"{r['role']} root", r) for r in status["roots"]),
            _expiry("issuer", status["issuer"]),
        )
        if f is not None
    ]
    phase, started = status["phase"], status["started_at"]
    if phase == "bundled":
        carried = status["bundle_generation"]
        pending = [
            sc
            for sc in sidecars
            if sc.expires_at > now() and carried is not None and (sc.acked_version or -1) < carried
        ]
        if not pending:
            message = "the rotation is bundled and every live sidecar has the new root: activate it"
            out.append(finding("MC0206", "CA", "rotation", message))
        elif started is not None and now() - started > ROTATION_STUCK:
            ids = ", ".join(str(sc.id) for sc in pending[:10]) + (" ..." if len(pending) > 10 else "")
            message = (
                f"the rotation started {started:%Y-%m-%d %H:%M} UTC and {len(pending)} live sidecar(s) have not "
                f"ACKed mesh generation {carried}, which carries the new root: {ids}"
            )
            out.append(finding("MC0205", "CA", "rotation", message))
    elif phase == "activated":
        safe = status["finish_safe_after"]
        if safe is not None and now() - safe > ROTATION_STUCK:
            message = f"the rotation could be finished since {safe:%Y-%m-%d %H:%M} UTC; the old root is still trusted"
            out.append(finding("MC0207", "CA", "rotation", message))
        elif safe is not None and now() > safe:
            message = "the rotation is activated and no SVID from the old issuer is valid any more: finish it"
            out.append(finding("MC0206", "CA", "rotation", message))
    return out
