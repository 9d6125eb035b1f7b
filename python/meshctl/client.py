"""A small client for the control-plane API, on the standard library only:
the sidecar uses it and must stay lean, the CLI shares it.

urllib (and with it http.client, email and ssl: ~35 ms) is imported by the
calls, not here: every CLI verb imports this module, and ``--help`` must not
pay for it (issue 13, item 14b).

Several control-plane URLs (replicas on one database, issue 16): ``ApiClient``
sticks to the one that answered last. When it does not answer (refused, reset,
timed out, a TLS failure other than trust) or answers 503 (a replica shutting
down), the same request goes to the next URL at once, round-robin, and the one
that answers becomes the sticky one. An answer, 4xx included, is never a
failover; nor is a ``TrustError``: a replica whose certificate is not the
trusted one is an alarm, not a reason to try its neighbour (no token went to
it). A request that no URL answered raises Unreachable, naming each; one that
some answered with 503 only, the last 503.
A POST or DELETE goes to the next URL only when it surely never left (refused,
no route, a failed TLS handshake): one that timed out or was reset may have
been done, and its caller decides (every sidecar loop retries anyway).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator, Sequence
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


def split_urls(values: str | Iterable[str]) -> list[str]:
    """Control-plane URLs from one value or several (a flag given more than once), each of which
    may hold several, comma-separated; trailing slashes dropped, duplicates once, in order.
    ValueError naming the first that is not an http:// or https:// URL, or when there is none."""
    from urllib.parse import urlsplit

    urls: list[str] = []
    for value in [values] if isinstance(values, str) else values:
        for part in value.split(","):
            url = part.strip().rstrip("/")
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
                raise ValueError(f"{part.strip()!r} is not an http:// or https:// URL")
            if url not in urls:
                urls.append(url)
    if not urls:
        raise ValueError("no control-plane URL given")
    return urls


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


#: A replica shutting down (or not ready) answers this: the request goes to the next URL.
_MOVE_ON = 503
#: Methods sent again to the next URL whatever became of them on the last one.
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT"})


def _unsent(e: BaseException) -> bool:
    """Whether the failure `e` happened before the request could leave: refused, no route, no
    such host, a TLS handshake that failed."""
    import errno
    import socket
    import ssl

    reason = getattr(e, "reason", e)
    if isinstance(reason, ConnectionRefusedError | socket.gaierror | ssl.SSLError):
        return True
    return isinstance(reason, OSError) and reason.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH)


class ApiClient:
    """The API at `urls` (one URL, a comma-separated list, or a sequence of them; see the module
    doc for failover); https:// ones are verified as `trust` says (``meshctl.trust``; the system's
    trust store when None): one trust for every URL, so one pin or CA file covers every replica."""

    def __init__(self, urls: str | Sequence[str], token: str | None, *, trust: Trust | None = None):
        self.urls = split_urls(urls)
        self.token, self.trust = token, trust
        self._at = 0  # the index of the URL that answered last
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The URL in use: the one that answered last (the first until one did)."""
        return self.urls[self._at]

    def _order(self) -> list[int]:
        """The URLs' indices to try, the sticky one first, then round-robin."""
        at, n = self._at, len(self.urls)
        return [(at + i) % n for i in range(n)]

    def _answered(self, index: int) -> None:
        if index != self._at:
            with self._lock:
                self._at = index

    def _failed(self, index: int) -> None:
        """`index` broke a request it had answered (a stream): the next request starts past it."""
        with self._lock:
            if self._at == index and len(self.urls) > 1:
                self._at = (index + 1) % len(self.urls)

    def _context(self, url: str) -> ssl.SSLContext | None:
        if self.trust is None or not url.startswith("https:"):
            return None
        return self.trust.context(url)

    def _unreachable(self, url: str, e: BaseException) -> Unreachable:
        import ssl

        reason = getattr(e, "reason", e)
        if isinstance(reason, ssl.SSLCertVerificationError):
            source = self.trust.source if self.trust is not None else "the system's trust store"
            return TrustError(f"{url}: its certificate does not verify against {source} ({reason.verify_message})")
        return Unreachable(f"{url}: {reason}")

    def learn_roots(self, roots: list[str]) -> None:
        """Roots received from the control plane over this verified connection (``Trust.learn``)."""
        if self.trust is not None:
            self.trust.learn(roots)

    def _request(self, url: str, method: str, path: str, body: Any) -> urllib.request.Request:
        import urllib.request

        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{url}{path}", data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        return req

    def _open(self, method: str, path: str, body: Any, timeout: float) -> tuple[int, Any]:
        """(index of the URL that answered, its open response), trying the URLs in turn (see the
        module doc). ApiError for an error status (304 included), Unreachable when none answered."""
        import http.client
        import urllib.error
        import urllib.request

        missed: list[str] = []
        unavailable: ApiError | None = None
        for index in self._order():
            url = self.urls[index]
            try:
                context = self._context(url)  # (a pin's first use asks this URL for its CA)
            except TrustError:
                raise
            except Unreachable as e:
                missed.append(str(e))
                continue
            try:
                req = self._request(url, method, path, body)
                resp = urllib.request.urlopen(req, timeout=timeout, context=context)
            except urllib.error.HTTPError as e:
                error = ApiError(304, None) if e.code == 304 else _api_error(e)
                if e.code != _MOVE_ON:
                    self._answered(index)
                    raise error from None
                unavailable = error
                missed.append(f"{url}: {format_detail(error)}")
                continue
            except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException) as e:
                failure = self._unreachable(url, e)
                if isinstance(failure, TrustError) or (method not in _IDEMPOTENT and not _unsent(e)):
                    raise failure from None
                missed.append(str(failure))
                continue
            self._answered(index)
            return index, resp
        if unavailable is not None:  # an answer, if not a useful one: the caller may read its detail
            raise unavailable
        raise Unreachable("; ".join(missed))

    def call(self, method: str, path: str, body: Any = None, *, timeout: float = 10.0) -> tuple[int, Any]:
        """(status, decoded JSON or None); raises ApiError for 4xx/5xx and Unreachable when no URL
        answers (`timeout` is per URL tried)."""
        import urllib.error

        try:
            index, resp = self._open(method, path, body, timeout)
        except ApiError as e:
            if e.status == 304:  # a long-poll that saw nothing newer
                return 304, None
            raise
        try:
            with resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            self._failed(index)
            raise self._unreachable(self.urls[index], e) from None

    def lines(self, path: str, *, timeout: float) -> Iterator[bytes]:
        """The lines of a streamed GET as they come; `timeout` bounds each wait for data. Opening
        the stream fails over as `call` does; a stream that breaks once open raises Unreachable,
        and the next request starts at the next URL."""
        import http.client

        index, resp = self._open("GET", path, None, timeout)
        with resp:
            try:
                while line := resp.readline():
                    yield line
            except (OSError, TimeoutError, http.client.HTTPException) as e:
                self._failed(index)
                raise self._unreachable(self.urls[index], e) from None
            # readline() ends a chunked body cut short (the replica died) as if it were complete;
            # only a complete one has read its last chunk (chunk_left None).
            if resp.chunked and resp.chunk_left is not None:
                self._failed(index)
                raise Unreachable(f"{self.urls[index]}: the stream was cut short")

    def get(self, path: str, **kw: Any) -> Any:
        return self.call("GET", path, **kw)[1]

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.call("POST", path, body, **kw)[1]

    def put(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.call("PUT", path, body, **kw)[1]

    def delete(self, path: str, **kw: Any) -> Any:
        return self.call("DELETE", path, **kw)[1]
