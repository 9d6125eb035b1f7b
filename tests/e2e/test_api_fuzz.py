"""schemathesis against api/openapi.json on a running control plane (a real
process on 127.0.0.1, an ephemeral port, a real SQLite file), with the admin
token: for every operation, no answer is a 5xx and every answer conforms to
the document (its status documented, its Content-Type and body as documented).
The control plane must still serve afterwards, and its log must hold no
traceback (a failure in a background task, such as the ACK writer, answers
nothing to the request that caused it).

Bounded for CI (about 1.5 minutes on 2 cores): each operation gets its examples
and `API_FUZZ_EXAMPLES` (default 15) generated cases, valid and invalid ones
(missing or mangled token, wrong types, bytes that are not JSON...),
derandomized (the same cases every run; set API_FUZZ_RANDOM=1 to explore
others), each request with a 10 s timeout. schemathesis's coverage phase (its
~7,400 deterministic edge cases) is off: it is built at collection, which the
fast loop pays too; it ran clean before the first commit of this file, as did
40 random examples per operation. The waits that requests may ask for are
clamped so that no case holds a request open:
- the long-polls (a sidecar's `snapshot`, `tap` and `config-dumps`: `wait` up to
  300 s) get `wait` at most 0.2 s; `proxy-config` (waits for the sidecar) a
  `timeout` of at most 0.2 s; `check` (waits for sidecars behind, as this mesh's
  one never ACKs) a `grace` of at most 0.2 s; an operator's tap stream
  (`GET /api/v1/tap/...`) `seconds` at most 0.2; absent, each is set to that
  bound (their defaults run to 30 s);
- `GET /api/v1/sidecars/{id}/watch` is left out: the stream never ends by itself
  (it is a sidecar's one long request), so no response to check ever completes.
Generated headers that frame the HTTP message (Content-Length, Transfer-Encoding,
Host, ...) are dropped: the HTTP server refuses a bad one before the app (found
with 40 random examples per operation; no operation can document it).
The admin token's own row is never revoked (a fuzzed `DELETE /api/v1/tokens/{id}`
of it would turn every later case into a 401 and test nothing more).
`negative_data_rejection` is not checked: FastAPI ignores unknown query
parameters, which that check counts as accepting invalid data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from apidoc import DOCUMENT, document
from meshproc import ControlPlane, http_route, service

WATCH = r"^/api/v1/sidecars/\{[^}]+\}/watch$"

# OTLP protobuf exports (`POST /v1/traces`) go as the bytes generated, as octet-streams do.
schemathesis.serializer.alias("application/x-protobuf", "application/octet-stream")
schema = schemathesis.openapi.from_path(DOCUMENT).exclude(method="GET", path_regex=WATCH)
# The coverage phase builds its ~7,400 cases when pytest collects: ~15 s that every run of the
# fast loop (which collects this module, then deselects it) would pay. Fuzzing, positive and
# negative, runs instead (see the module docstring).
schema.config.phases.coverage.enabled = False

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]

#: Headers that frame the HTTP message: a generated one (`Content-Length: };`) is refused by the
#: HTTP server (uvicorn's 400 "Invalid HTTP request received.") before any operation sees it.
FRAMING = {"content-length", "transfer-encoding", "host", "connection", "upgrade", "te", "trailer", "expect"}

#: Query parameters that make a request wait, and the most a case may ask for.
WAITS = {"wait": 0.2, "timeout": 0.2, "grace": 0.2, "seconds": 0.2}

EXAMPLES = int(os.environ.get("API_FUZZ_EXAMPLES", "15"))
RANDOM = bool(os.environ.get("API_FUZZ_RANDOM"))


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A control plane with a little mesh and a sidecar in it, so that cases naming `default`,
    small ids or these names reach past the 404s."""
    cp = ControlPlane(tmp_path_factory.mktemp("cp")).start()
    cp.apply(
        service("pricing"), service("cart"), http_route("pricing", "pricing", {"backendRefs": [{"name": "pricing"}]})
    )
    body = {"service": "pricing", "address": "127.0.0.1", "inbound_port": 15001, "app_port": 8080}
    cp.ok("PUT", "/api/v1/sidecars", json=body)
    yield cp
    alive = cp.proc is not None and cp.proc.poll() is None
    cp.stop()
    assert alive, f"the control plane died under the fuzzing:\n{cp.log.read_text()[-5000:]}"


@pytest.fixture(scope="module")
def admin_token_id(plane: ControlPlane) -> int:
    return next(t["id"] for t in plane.ok("GET", "/api/v1/tokens") if t["role"] == "admin")


def clamp_waits(case: Any) -> None:
    """The operation's waits (absent: their defaults, up to 30 s) at most WAITS' (values stay
    strings where the case made them strings, as the coverage phase does)."""
    spec = document()["paths"][case.path].get(case.method.lower(), {})  # (none: a method it does not take)
    declared = {p["name"] for p in spec.get("parameters", []) if p["in"] == "query"}
    for name in declared & WAITS.keys():
        value = case.query.get(name)
        try:
            too_long = value is None or float(value) > WAITS[name]
        except (TypeError, ValueError):
            too_long = False  # (not a number: refused with 422 at once)
        if too_long:
            case.query[name] = WAITS[name]


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not RANDOM,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_document(case: Any, plane: ControlPlane, admin_token_id: int) -> None:
    own = case.method == "DELETE" and case.path == "/api/v1/tokens/{token_id}"
    if own and case.path_parameters.get("token_id") == admin_token_id:
        return
    clamp_waits(case)
    for name in [h for h in case.headers or {} if h.lower() in FRAMING]:
        del case.headers[name]
    case.call_and_validate(base_url=plane.url, headers=plane.admin, checks=CHECKS, timeout=10)


def test_the_control_plane_serves_after_the_fuzzing_and_logged_no_traceback(plane: ControlPlane) -> None:
    assert plane.healthy()
    assert plane.ok("GET", "/api/v1/mesh")["generation"] > 0
    log = plane.log.read_text()
    assert "Traceback" not in log, log[log.index("Traceback") - 2000 :][:6000]
