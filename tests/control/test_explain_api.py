"""`POST /api/v1/explain` through a real control plane: the services it is
asked about must exist (404 naming the one that does not), and its answer
is structured data all the way down (a filter is an object, never a
Python repr inside a string)."""

from __future__ import annotations

from typing import Any

import pytest

from meshproc import ControlPlane, http_route, module_control_plane, service

cp = module_control_plane()

HEADERS = {"set": [{"name": "x-env", "value": "prod"}], "remove": ["x-debug"]}


@pytest.fixture(scope="module")
def mesh(cp: ControlPlane) -> ControlPlane:
    rule = {
        "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": HEADERS}],
        "backendRefs": [{"name": "catalog"}],
    }
    cp.apply(service("web"), service("catalog"), http_route("catalog", "catalog", rule))
    return cp


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"source": "nope", "destination": "catalog"}, "service default/nope not found"),
        ({"source": "ops/web", "destination": "catalog"}, "service ops/web not found"),
        ({"source": "web", "destination": "nope"}, "service default/nope not found"),
        ({"source": "default/web", "destination": "shop/catalog"}, "service shop/catalog not found"),
    ],
)
def test_an_unknown_service_is_a_404_naming_it(mesh: ControlPlane, body: dict[str, Any], detail: str) -> None:
    r = mesh.call("POST", "/api/v1/explain", json=body)
    assert r.status_code == 404, r.text
    assert r.json()["detail"].startswith(detail)


def test_a_host_naming_no_service_is_an_outcome_not_an_error(mesh: ControlPlane) -> None:
    out = mesh.ok("POST", "/api/v1/explain", json={"source": "web", "host": "example.com"})
    assert out["outcome"] == "unknown_service"


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def test_filters_are_objects_as_the_route_spells_them(mesh: ControlPlane) -> None:
    out = mesh.ok("POST", "/api/v1/explain", json={"source": "web", "destination": "catalog"})
    assert out["outcome"] == "forward"
    # With the defaults filled in, as the route is stored.
    assert out["filters"] == [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": [], **HEADERS}}]
    reprs = [s for s in _strings(out) if "{'" in s or "': " in s]
    assert reprs == [], reprs
