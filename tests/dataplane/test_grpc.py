"""gRPC through an HTTP/2 listener and an http2 cluster: unary, streaming, and
status codes carried in trailers."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from helpers import cluster, http_listener, route

SERVICE = "demo.Echo"
NO_PROXY = [("grpc.enable_http_proxy", 0)]


def _unary(request: bytes, context: grpc.ServicerContext) -> bytes:
    if request == b"missing":
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    context.set_trailing_metadata((("x-served-by", "grpc-backend"),))
    return b"echo:" + request


def _server_stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    for i in range(int(request)):
        yield f"item-{i}".encode()


def _bidi(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
    for r in requests:
        yield r.upper()


@pytest.fixture
def grpc_backend() -> Iterator[str]:
    server = grpc.server(ThreadPoolExecutor(max_workers=8), options=NO_PROXY)
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(_unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(_server_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(_bidi),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(0)


@pytest.fixture
def channel(grpc_backend, proxy) -> Iterator[grpc.Channel]:
    dp = proxy(
        {
            "listeners": [http_listener("grpc", [route("echo", path_prefix=f"/{SERVICE}")])],
            "clusters": [cluster("echo", [grpc_backend], protocol="http2")],
        }
    )
    with grpc.insecure_channel(dp.addresses()["grpc"], options=NO_PROXY) as ch:
        yield ch


def test_unary_call_and_trailers(channel) -> None:
    unary = channel.unary_unary(f"/{SERVICE}/Unary")
    reply, call = unary.with_call(b"hello", timeout=10)
    assert reply == b"echo:hello"
    assert call.code() == grpc.StatusCode.OK
    assert ("x-served-by", "grpc-backend") in call.trailing_metadata()


def test_error_status_passes_through(channel) -> None:
    unary = channel.unary_unary(f"/{SERVICE}/Unary")
    with pytest.raises(grpc.RpcError) as exc:
        unary(b"missing", timeout=10)
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    assert exc.value.details() == "no such thing"


def test_server_streaming(channel) -> None:
    stream = channel.unary_stream(f"/{SERVICE}/ServerStream")
    items = list(stream(b"200", timeout=10))
    assert items == [f"item-{i}".encode() for i in range(200)]


def test_bidirectional_streaming(channel) -> None:
    bidi = channel.stream_stream(f"/{SERVICE}/Bidi")
    words = [f"word{i}".encode() for i in range(50)]
    assert list(bidi(iter(words), timeout=10)) == [w.upper() for w in words]


def test_many_concurrent_calls_share_one_connection(channel) -> None:
    unary = channel.unary_unary(f"/{SERVICE}/Unary")
    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda i: unary(str(i).encode(), timeout=10), range(200)))
    assert replies == [f"echo:{i}".encode() for i in range(200)]


def test_metrics_count_grpc_statuses_from_trailers(grpc_backend, proxy) -> None:
    """A gRPC status is read when the call ends (trailers, or a trailers-only answer's head); a
    caller's error (NOT_FOUND) is no failure of the server."""
    dp = proxy(
        {
            "listeners": [http_listener("grpc", [route("echo", path_prefix=f"/{SERVICE}")])],
            "clusters": [cluster("echo", [grpc_backend], protocol="http2")],
        }
    )
    with grpc.insecure_channel(dp.addresses()["grpc"], options=NO_PROXY) as ch:
        unary = ch.unary_unary(f"/{SERVICE}/Unary")
        for _ in range(3):
            assert unary(b"x", timeout=10) == b"echo:x"
        with pytest.raises(grpc.RpcError):
            unary(b"missing", timeout=10)
    counts: dict[tuple[str, str], float] = {}
    for line in dp.metrics().splitlines():
        if line.startswith("meshctl_requests_total{"):
            labels = dict(part.split("=", 1) for part in line[line.index("{") + 1 : line.index("}")].split(","))
            key = (labels["grpc_status"].strip('"'), labels["classification"].strip('"'))
            counts[key] = counts.get(key, 0) + float(line.rsplit(" ", 1)[1])
    assert counts == {("0", "success"): 3, ("5", "success"): 1}


def test_a_stream_may_pause_past_the_body_timeout_once_answered(grpc_backend, proxy) -> None:
    """The listener's body_timeout guards a request body until the upstream answers; a
    bidirectional stream that then goes quiet for longer is not cut (issue 14)."""
    listener = http_listener("grpc", [route("echo", path_prefix=f"/{SERVICE}")])
    listener["limits"] = {"body_timeout_ms": 300}
    dp = proxy({"listeners": [listener], "clusters": [cluster("echo", [grpc_backend], protocol="http2")]})
    outbox: queue.Queue[bytes | None] = queue.Queue()

    def requests() -> Iterator[bytes]:
        while (item := outbox.get()) is not None:
            yield item

    with grpc.insecure_channel(dp.addresses()["grpc"], options=NO_PROXY) as ch:
        replies = ch.stream_stream(f"/{SERVICE}/Bidi")(requests(), timeout=20)
        outbox.put(b"first")
        assert next(replies) == b"FIRST"
        time.sleep(1.0)  # over three body timeouts of silence
        outbox.put(b"second")
        assert next(replies) == b"SECOND"
        outbox.put(None)
        assert list(replies) == []
    assert dp.stats()["listeners"]["grpc"]["refusals"]["body_timeout"] == 0
