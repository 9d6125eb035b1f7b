"""Each kind of error answer a real control plane gives is documented for its
operation in api/openapi.json, with the `{"detail": ...}` body: 401 without a
token, 403 for a token without the role (or of another service), 404 for what
is not there (in the path, the query or the body), 409 for a duplicate, 413
for a body over the limit. (schemathesis found them all undocumented.)"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from apidoc import assert_documented, operation
from meshctl.control.limits import MAX_REQUEST_BYTES
from meshproc import ControlPlane, module_control_plane, service

cp = module_control_plane()


@pytest.fixture(scope="module", autouse=True)
def services(cp: ControlPlane) -> None:
    cp.apply(service("pricing"), service("cart"))


def call(cp: ControlPlane, method: str, path: str, token: str | None, **kw: Any) -> httpx.Response:
    headers = kw.pop("headers", {}) | ({"Authorization": f"Bearer {token}"} if token else {})
    return httpx.request(method, f"{cp.url}{path}", headers=headers, timeout=30, **kw)


def test_401_without_a_token(cp: ControlPlane) -> None:
    for method, path in [("GET", "/api/v1/services"), ("GET", "/api/v1/identity/bundle"), ("GET", "/metrics")]:
        r = call(cp, method, path, None)
        assert r.status_code == 401
        assert_documented(operation(method, path), r)


def test_403_for_a_token_without_the_role_or_of_another_service(cp: ControlPlane) -> None:
    reader, join = cp.token("reader"), cp.join_token("cart")
    r = call(cp, "POST", "/api/v1/services", reader, json={"name": "x", "ports": [{"port": 80}]})
    assert r.status_code == 403
    assert_documented(operation("POST", "/api/v1/services"), r)

    body = {"service": "pricing", "address": "127.0.0.1", "inbound_port": 15001, "app_port": 8080}
    r = call(cp, "PUT", "/api/v1/sidecars", join, json=body)
    assert r.status_code == 403
    assert_documented(operation("PUT", "/api/v1/sidecars"), r)

    r = call(cp, "POST", "/api/v1/identity/svid", cp.token("admin"), json={"csr": "x"})
    assert r.status_code == 403
    assert_documented(operation("POST", "/api/v1/identity/svid"), r)


def test_404_for_what_is_not_there(cp: ControlPlane) -> None:
    admin = cp.token("admin")
    r = call(cp, "GET", "/api/v1/services/default/nope", admin)
    assert r.status_code == 404
    assert_documented(operation("GET", "/api/v1/services/{namespace}/{name}"), r)

    r = call(cp, "POST", "/api/v1/explain", admin, json={"source": "nope", "destination": "pricing"})
    assert r.status_code == 404
    assert_documented(operation("POST", "/api/v1/explain"), r)

    for path, params in [("/api/v1/stats", {"name": "nope"}), ("/api/v1/stats/series", {"service": "default/nope"})]:
        r = call(cp, "GET", path, admin, params=params)
        assert r.status_code == 404
        assert_documented(operation("GET", path), r)


def test_409_for_a_duplicate(cp: ControlPlane) -> None:
    r = call(cp, "POST", "/api/v1/services", cp.token("admin"), json={"name": "pricing", "ports": [{"port": 80}]})
    assert r.status_code == 409
    assert_documented(operation("POST", "/api/v1/services"), r)


def test_413_for_a_body_over_the_limit(cp: ControlPlane) -> None:
    big = b"x" * (MAX_REQUEST_BYTES + 1)
    r = call(cp, "POST", "/api/v1/apply", cp.token("admin"), content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert_documented(operation("POST", "/api/v1/apply"), r)
