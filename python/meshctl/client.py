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
    import ssl
    import urllib.error
    import urllib.request

    from meshctl.trust import Trust


class ApiError(Exception):
    """The API answered with an error status; `detail` is its explanation."""

    def __init__(self, status: int, detail: Any):
        self.status, self.detail = status, detail
        super().__init__(f"{status}: {format_detail(detail)}")


class Unreachable(Exception):
    """No answer from the control plane (refused, timed out, reset)."""


class TrustError(Unreachable):
    """The control plane's certificate is not the one trusted (a wrong pin, a certificate that
    does not verify): no request with a token went out. An Unreachable, so loops retry it;
    a process that is starting refuses to go on."""


def field_path(loc: list[Any]) -> str:
    """A 422 item's `loc` as a field path: ``documents[1].spec.rules[0].backendRefs``. Indices
    count from 0, as the API's `loc` and the data plane's errors do, wherever meshctl shows one."""
    out = ""
    for i, part in enumerate(loc):
        if i == 0 and part == "body":
            continue
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


def format_detail(detail: Any) -> str:
    """FastAPI's error shapes as a person would want to read them."""
    if isinstance(detail, list):
        lines = []
        for d in detail:
            if isinstance(d, dict) and "loc" in d:
                lines.append(f"{field_path(list(d['loc']))}: {d.get('msg', '')}")
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
    """The API at `url`; an https:// one is verified as `trust` says (``meshctl.trust``; the
    system's trust store when None)."""

    def __init__(self, url: str, token: str | None, *, trust: Trust | None = None):
        self.url, self.token, self.trust = url.rstrip("/"), token, trust

    def _context(self) -> ssl.SSLContext | None:
        if self.trust is None or not self.url.startswith("https:"):
            return None
        return self.trust.context()

    def _unreachable(self, e: BaseException) -> Unreachable:
        import ssl

        reason = getattr(e, "reason", e)
        if isinstance(reason, ssl.SSLCertVerificationError):
            source = self.trust.source if self.trust is not None else "the system's trust store"
            return TrustError(f"{self.url}: its certificate does not verify against {source} ({reason.verify_message})")
        return Unreachable(f"{self.url}: {reason}")

    def learn_roots(self, roots: list[str]) -> None:
        """Roots received from the control plane over this verified connection (``Trust.learn``)."""
        if self.trust is not None:
            self.trust.learn(roots)

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
            req = self._request(method, path, body)
            with urllib.request.urlopen(req, timeout=timeout, context=self._context()) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            if e.code == 304:  # a long-poll that saw nothing newer
                return 304, None
            raise _api_error(e) from None
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            raise self._unreachable(e) from None

    def lines(self, path: str, *, timeout: float) -> Iterator[bytes]:
        """The lines of a streamed GET as they come; `timeout` bounds each wait for data."""
        import http.client
        import urllib.error
        import urllib.request

        try:
            req = self._request("GET", path, None)
            with urllib.request.urlopen(req, timeout=timeout, context=self._context()) as resp:
                while line := resp.readline():
                    yield line
        except urllib.error.HTTPError as e:
            raise _api_error(e) from None
        except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException) as e:
            raise self._unreachable(e) from None

    def get(self, path: str, **kw: Any) -> Any:
        return self.call("GET", path, **kw)[1]

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.call("POST", path, body, **kw)[1]

    def put(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.call("PUT", path, body, **kw)[1]

    def delete(self, path: str, **kw: Any) -> Any:
        return self.call("DELETE", path, **kw)[1]
