"""A JSON body that cannot be parsed at all (bytes that are not UTF-8, arrays
nested past the parser's depth) is a 422 at ["body"], as any JSON that does
not parse is: FastAPI answered an undocumented 400 (found by schemathesis).
The OTLP receiver's own 400 for a malformed export stays a 400."""

from __future__ import annotations

import httpx
import pytest

from apidoc import assert_documented, operation
from meshproc import ControlPlane, module_control_plane

cp = module_control_plane()

JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"\x8fZ\x1c\xffU", "utf-8"),
        (b'{"documents": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
        (b"[" * 100_000, "nested too deeply"),
    ],
    ids=["not-utf8", "deep", "deep-unclosed"],
)
@pytest.mark.parametrize(("method", "path"), [("POST", "/api/v1/apply"), ("PUT", "/api/v1/services/default/x")])
def test_an_unparseable_json_body_is_a_422_at_body(
    cp: ControlPlane, method: str, path: str, body: bytes, why: str
) -> None:
    headers = {"Authorization": f"Bearer {cp.token('admin')}", **JSON}
    r = httpx.request(method, f"{cp.url}{path}", content=body, headers=headers, timeout=10)
    assert r.status_code == 422, r.text
    [item] = r.json()["detail"]
    assert item["loc"] == ["body"] and item["type"] == "json_invalid" and why in item["msg"], item
    template = "/api/v1/services/{namespace}/{name}" if path.startswith("/api/v1/services") else path
    assert_documented(operation(method, template), r)


def test_a_malformed_otlp_export_is_still_a_400(cp: ControlPlane) -> None:
    headers = {"Authorization": f"Bearer {cp.token('admin')}", **JSON}
    r = httpx.post(f"{cp.url}/v1/traces", content=b"\x8f\xff", headers=headers, timeout=10)
    assert r.status_code == 400, r.text
    assert isinstance(r.json()["detail"], str)
