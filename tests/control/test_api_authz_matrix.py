"""The authorization matrix: every operation in api/openapi.json (iterated, not
listed), called by every kind of caller who should not get in, answers 401 or
403 (documented for it), and writes nothing: the database file (every table,
every row) is the same after a caller's sweep of all operations as before.

Callers: no token; malformed ones (a bearer that is no token; another scheme);
the read-only token; another service's sidecar join token; a revoked admin
token; a revoked join token of the service the paths name; an expired admin
token. Every path names the service `default/pricing`, its registered sidecar,
its join token and its endpoint, so that an operation that forgot its check
would act on something real.

What each is allowed, by design (deps.py and the routers):
- PUBLIC operations answer anyone (listed below with the reason);
- the reader reads: every GET but the READER_DENIED ones, and the READER_POSTS
  (computations and telemetry, no change to the mesh);
- a join token acts for its own service only: JOIN_ALLOWED (its trust bundle,
  SVIDs for its own identity, spans); here it is cart's, asking for pricing's.
Anything else must be refused: an operation added without protection fails
this test (no token gets in), and so does a new write the reader may call.
An allowed call may answer anything but a 5xx; it must write nothing too.
Not in the document, public by design: FastAPI's /openapi.json, /docs and
/redoc (the contract itself) and the dashboard's static shell under /ui (it
holds no data; see routers/ui.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from apidoc import Operation, assert_documented, operations
from helpers import wait_until
from meshctl.sidecar.identity import key_and_csr
from meshctl.spiffe import spiffe_id
from meshproc import ControlPlane, module_control_plane, service

cp = module_control_plane()

#: (method, path): why anyone may call it.
PUBLIC = {
    ("GET", "/healthz"): "liveness, for probes and load balancers; says only 'ok'",
    ("GET", "/api/v1/ca/serving"): "the serving CA certificate and its pin, fetched before trusting the "
    "control plane (as kubeadm's cluster-info): no secret",
}

#: GETs the reader may not call: secrets, live traffic, and what only a sidecar asks for itself.
READER_DENIED = {
    "/api/v1/tokens",
    "/api/v1/services/{namespace}/{name}/join-tokens",
    "/api/v1/tap/{namespace}/{service}",
    "/api/v1/sidecars/{sidecar_id}/snapshot",
    "/api/v1/sidecars/{sidecar_id}/watch",
    "/api/v1/sidecars/{sidecar_id}/tap",
    "/api/v1/sidecars/{sidecar_id}/config-dumps",
}
#: Not GETs, and still no change to the mesh: what a request would do; spans for the trace store.
READER_POSTS = {("POST", "/api/v1/explain"), ("POST", "/v1/traces"), ("GET", "/api/v1/identity/bundle")}
#: What any join token may do, for its own service: its trust bundle, its own SVID (asked here for
#: another service's identity, so refused), spans.
JOIN_ALLOWED = {("GET", "/api/v1/identity/bundle"), ("POST", "/v1/traces")}

#: Query parameters that bound the waits of the calls that are allowed (long-polls, check, tap).
NO_WAIT = {"wait": 0, "timeout": 0.1, "grace": 0, "seconds": 0.1}


@dataclass
class Mesh:
    values: dict[str, Any]  # path parameters
    svid_csr: str  # a CSR for pricing's identity
    pricing_join: str


@pytest.fixture(scope="module")
def mesh(cp: ControlPlane) -> Mesh:
    cp.apply(service("pricing"), service("cart"))
    join = cp.ok("POST", "/api/v1/tokens", json={"service": "default/pricing", "name": "pricing-sidecars"})
    body = {"service": "pricing", "address": "127.0.0.1", "inbound_port": 15001, "app_port": 8080}
    sidecar = httpx.put(
        f"{cp.url}/api/v1/sidecars", json=body, headers={"Authorization": f"Bearer {join['token']}"}, timeout=10
    ).json()
    endpoint = cp.ok("PUT", "/api/v1/services/default/pricing/endpoints", json={"address": "127.0.0.1", "port": 8080})
    bundle = cp.ok("GET", "/api/v1/identity/bundle")
    _, csr = key_and_csr(spiffe_id(bundle["trust_domain"], "default", "pricing"))
    values = {
        "namespace": "default",
        "name": "pricing",
        "service": "pricing",
        "sidecar_id": sidecar["id"],
        "token_id": join["id"],
        "endpoint_id": endpoint["id"],
        "revision": 1,
        "before": 0,
        "after": 1,
        "trace_id": "0" * 32,
        "session_id": "x",
        "request_id": "x",
    }
    return Mesh(values, csr, join["token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def revoked(cp: ControlPlane, **body: Any) -> str:
    made = cp.ok("POST", "/api/v1/tokens", json=body)
    cp.ok("DELETE", f"/api/v1/tokens/{made['id']}")
    return str(made["token"])


def expired_admin(cp: ControlPlane) -> str:
    token = str(cp.ok("POST", "/api/v1/tokens", json={"role": "admin", "expires_in_seconds": 1})["token"])
    url = f"{cp.url}/api/v1/version"
    wait_until(lambda: httpx.get(url, headers=bearer(token)).status_code == 401, timeout=15, what="it to expire")
    return token


CALLERS = ["none", "not-a-token", "basic", "reader", "other-join", "revoked-admin", "revoked-join", "expired-admin"]


def headers_of(caller: str, cp: ControlPlane, mesh: Mesh) -> dict[str, str]:
    match caller:
        case "none":
            return {}
        case "not-a-token":
            return bearer("mesh-admin-" + "x" * 43)
        case "basic":
            return {"Authorization": f"Basic {cp.token('admin')}"}
        case "reader":
            return bearer(cp.token("reader"))
        case "other-join":
            return bearer(cp.join_token("cart"))
        case "revoked-admin":
            return bearer(revoked(cp, role="admin", name="doomed"))
        case "revoked-join":
            return bearer(revoked(cp, service="default/pricing"))
        case "expired-admin":
            return bearer(expired_admin(cp))
    raise AssertionError(caller)


def allowed(caller: str, op: Operation) -> bool:
    key = (op.method, op.path)
    if key in PUBLIC:
        return True
    if caller == "reader":
        return (op.method == "GET" and op.path not in READER_DENIED) or key in READER_POSTS
    if caller == "other-join":
        return key in JOIN_ALLOWED
    return False


#: Valid bodies for the operations that judge the caller in the handler, after the body is
#: validated (a sidecar's own calls): `{}` would be a 422 before the refusal could show.
BODIES = {
    ("PUT", "/api/v1/sidecars"): {"service": "pricing", "address": "127.0.0.1", "inbound_port": 15002, "app_port": 80},
    ("POST", "/api/v1/sidecars/{sidecar_id}/status"): {"version": 1},
    ("POST", "/api/v1/sidecars/{sidecar_id}/config-dumps/{request_id}"): {"version": 1},
    ("POST", "/api/v1/sidecars/{sidecar_id}/tap/{session_id}"): {"events": []},
}


def request(op: Operation, mesh: Mesh) -> dict[str, Any]:
    """httpx.request's arguments for `op` on pricing's things (a body where it takes one)."""
    params = {p["name"]: NO_WAIT[p["name"]] for p in op.spec.get("parameters", []) if p["name"] in NO_WAIT}
    kw: dict[str, Any] = {"params": params}
    if (op.method, op.path) in BODIES:
        kw["json"] = BODIES[op.method, op.path]
    elif op.path == "/api/v1/identity/svid":
        kw["json"] = {"csr": mesh.svid_csr}
    elif op.path == "/v1/traces":
        kw["content"], kw["headers"] = b"{}", {"Content-Type": "application/json"}
    elif op.has_body:
        kw["json"] = {}
    return kw


#: Written by the control plane's own tick, not by requests: each replica's liveness (control/replicas.py).
OWN_TICK = {"replica"}


def snapshot(cp: ControlPlane) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table a request could write, read from the database itself."""
    return {t: sorted(cp.sql(f'SELECT * FROM "{t}"'), key=repr) for t in cp.tables() if t not in OWN_TICK}


def call(client: httpx.Client, op: Operation, mesh: Mesh, headers: dict[str, str]) -> httpx.Response:
    kw = request(op, mesh)
    req = client.build_request(op.method, op.url(**mesh.values), headers={**kw.pop("headers", {}), **headers}, **kw)
    # Streamed, so that a stream let in by mistake (watch, tap) fails the test rather than hanging it.
    response = client.send(req, stream=True)
    try:
        if response.status_code != 200 or "ndjson" not in response.headers.get("content-type", ""):
            response.read()
    finally:
        response.close()
    return response


def test_every_operation_but_the_public_ones_takes_a_token() -> None:
    open_ones = {(op.method, op.path) for op in operations() if not op.secured}
    assert open_ones == set(PUBLIC), "an operation without security that is not listed PUBLIC (or the reverse)"


@pytest.mark.parametrize("caller", CALLERS)
def test_matrix(cp: ControlPlane, mesh: Mesh, caller: str) -> None:
    """Refused: 401 without a valid token, 403 for a valid one without the right; allowed: an
    answer the operation documents, neither 401 nor 403. Either way, not a row changed."""
    headers = headers_of(caller, cp, mesh)
    refusal = 403 if caller in ("reader", "other-join") else 401
    before = snapshot(cp)
    wrong = []
    with httpx.Client(base_url=cp.url, timeout=15) as client:
        for op in operations():
            r = call(client, op, mesh, headers)
            if allowed(caller, op):
                if r.status_code in (401, 403) or r.status_code not in op.statuses:
                    wrong.append(f"{op} (allowed): {r.status_code} {r.text[:200]}")
            elif r.status_code != refusal:
                wrong.append(f"{op}: {r.status_code}, not {refusal}: {r.text[:200]}")
            else:
                assert_documented(op, r)
    after = snapshot(cp)
    assert not wrong, f"{caller}:\n" + "\n".join(wrong)
    assert before == after, f"{caller} changed the tables {[t for t in before if before[t] != after.get(t)]}"
