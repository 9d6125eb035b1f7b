"""A small client for the control-plane API, on the standard library only:
the sidecar uses it and must stay lean, the CLI shares it.

urllib (and with it http.client, email and ssl: ~35 ms) is imported by the
calls, not here: every CLI verb imports this module, and ``--help`` must not
pay for it (issue 13, item 14b).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import urllib.error
    import urllib.request


class ApiError(Exception):
    """The API answered with an error status; `detail` is its explanation."""

    def __init__(self, status: int, detail: Any):
        self.status, self.detail = status, detail
        super().__init__(f"{status}: {format_detail(detail)}")


class Unreachable(Exception):
    """No answer from the control plane (refused, timed out, reset)."""


def format_detail(detail: Any) -> str:
    """FastAPI's error shapes as a person would want to read them."""
    if isinstance(detail, list):
        lines = []
        for d in detail:
            if isinstance(d, dict) and "loc" in d:
                loc = ".".join(str(p) for p in d["loc"] if p != "body")
                lines.append(f"{loc}: {d.get('msg', '')}")
            else:
                lines.append(str(d))
        return "\n".join(lines)
    return str(detail)


def _api_error(e: urllib.error.HTTPError) -> ApiError:
    raw = e.read()
    try:
        detail = json.loads(raw).get("detail", raw.decode(errors="replace"))
    except (ValueError, AttributeError):
        detail = raw.decode(errors="replace") or e.reason
    return ApiError(e.code, detail)


class ApiClient:
    def __init__(self, url: str, token: str | None):
        self.url, self.token = url.rstrip("/"), token

    def _request(self, method: str, path: str, body: Any) -> urllib.request.Request:
        import urllib.request

        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        return req

    def call(self, method: str, path: str, body: Any = None, *, timeout: float = 10.0) -> tuple[int, Any]:
        """(status, decoded JSON or None); raises ApiError for 4xx/5xx and Unreachable for no answer."""
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(self._request(method, path, body), timeout=timeout) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            if e.code == 304:  # a long-poll that saw nothing newer
                return 304, None
            raise _api_error(e) from None
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            raise Unreachable(f"{self.url}: {getattr(e, 'reason', e)}") from None

    def lines(self, path: str, *, timeout: float) -> Iterator[bytes]:
        """The lines of a streamed GET as they come; `timeout` bounds each wait for data."""
        import http.client
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(self._request("GET", path, None), timeout=timeout) as resp:
                while line := resp.readline():
                    yield line
        except urllib.error.HTTPError as e:
            raise _api_error(e) from None
        except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException) as e:
            raise Unreachable(f"{self.url}: {getattr(e, 'reason', e)}") from None

    def get(self, path: str, **kw: Any) -> Any:
        return self.call("GET", path, **kw)[1]

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.call("POST", path, body, **kw)[1]

    def put(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.call("PUT", path, body, **kw)[1]

    def delete(self, path: str, **kw: Any) -> Any:
        return self.call("DELETE", path, **kw)[1]
