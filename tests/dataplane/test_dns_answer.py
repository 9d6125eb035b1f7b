"""The data plane's DNS answerer (the `dns` section): real queries with `dig` and hand-built
datagrams over UDP. Names of `records` are answered from them, other names are forwarded to a
small UDP "upstream" run by the test and its answer relayed, an update changes the records on
the same socket, and malformed packets get no reply while the server keeps answering."""

from __future__ import annotations

import re
import shutil
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from helpers import wait_until
from meshctl import DataPlane

pytestmark = pytest.mark.skipif(shutil.which("dig") is None, reason="dig (dnsutils) is not installed")


class Upstream:
    """A UDP DNS server on 127.0.0.1: names starting with "fwd" get A 192.0.2.1, others NXDOMAIN;
    with `silent`, nothing is answered. It records the query ids it saw."""

    def __init__(self, silent: bool = False) -> None:
        self.silent = silent
        self.ids: list[int] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        host, port = self.sock.getsockname()
        return f"{host}:{port}"

    def _serve(self) -> None:
        while True:
            try:
                packet, client = self.sock.recvfrom(4096)
            except OSError:
                return
            query_id = struct.unpack("!H", packet[:2])[0]
            self.ids.append(query_id)
            if self.silent:
                continue
            end = packet.index(0, 12) + 5
            question = packet[12:end]
            known = question[1:4] == b"fwd"
            header = struct.pack("!HHHHHH", query_id, 0x8180 if known else 0x8183, 1, int(known), 0, 0)
            answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([192, 0, 2, 1]) if known else b""
            self.sock.sendto(header + question + answer, client)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    u = Upstream()
    yield u
    u.close()


def dns_config(upstream: str, records: dict[str, list[str]], address: str = "127.0.0.1:0") -> dict[str, Any]:
    return {"dns": {"address": address, "records": records, "upstream": [upstream], "ttl_s": 7}}


def dns_port(dp: DataPlane) -> int:
    return int(dp.stats()["dns_server"]["address"].rsplit(":", 1)[1])


def dig(port: int, name: str, qtype: str = "A") -> tuple[str, list[str], str]:
    """(status, answer lines, full output) of one query."""
    out = subprocess.run(
        ["dig", "@127.0.0.1", "-p", str(port), name, qtype, "+time=5", "+tries=1", "+nocookie"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    status = re.search(r"status: (\w+)", out)
    answers = re.findall(r"^(\S+\s+\d+\s+IN\s+A\s+\S+)$", out, flags=re.M)
    return (status.group(1) if status else "no reply"), answers, out


def query(name: str, query_id: int, qtype: int = 1) -> bytes:
    """A standard query with RD set."""
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p)
    return struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!HH", qtype, 1)


def ask(port: int, packet: bytes, timeout: float = 5.0) -> bytes | None:
    """Sends one datagram, returns the reply (None when none came within `timeout`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.connect(("127.0.0.1", port))
        s.send(packet)
        try:
            return s.recv(4096)
        except TimeoutError:
            return None


def test_records_are_answered_case_insensitively(proxy, upstream) -> None:
    dp = proxy(dns_config(upstream.address, {"pricing": ["240.240.0.7"], "Api.Example.com.": ["10.1.0.1", "10.1.0.2"]}))
    port = dns_port(dp)

    status, answers, out = dig(port, "pricing")
    assert status == "NOERROR", out
    assert [a.split() for a in answers] == [["pricing.", "7", "IN", "A", "240.240.0.7"]]
    assert "flags: qr aa rd ra" in out
    status, answers, _ = dig(port, "API.example.COM.")
    assert status == "NOERROR"
    assert sorted(a.split()[-1] for a in answers) == ["10.1.0.1", "10.1.0.2"]
    for qtype in ("AAAA", "TXT", "MX"):
        status, answers, out = dig(port, "pricing", qtype)
        assert (status, answers) == ("NOERROR", []), out
        assert "ANSWER: 0" in out

    assert upstream.ids == [], "known names never go upstream"
    stats = dp.stats()["dns_server"]
    assert stats | {"address": None} == {"address": None, "queries": 5, "answered": 5, "forwarded": 0, "failed": 0}
    assert re.search(r'^meshctl_dns_queries_total\{[^}]*result="answered"\} 5', dp.metrics(), flags=re.M)


def test_other_names_are_forwarded_and_relayed_with_the_client_id(proxy, upstream) -> None:
    dp = proxy(dns_config(upstream.address, {"pricing": ["240.240.0.7"]}))
    port = dns_port(dp)

    status, answers, out = dig(port, "fwd.example.org")
    assert status == "NOERROR", out
    assert answers[0].split()[-1] == "192.0.2.1"
    status, _, out = dig(port, "nowhere.example.org")
    assert status == "NXDOMAIN", out

    reply = ask(port, query("fwd.other.test", 0xABCD))
    assert reply is not None
    assert struct.unpack("!H", reply[:2])[0] == 0xABCD
    assert reply[-4:] == bytes([192, 0, 2, 1])
    assert len(upstream.ids) == 3

    stats = dp.stats()["dns_server"]
    assert (stats["queries"], stats["forwarded"], stats["answered"]) == (3, 3, 0)


def test_a_silent_upstream_means_servfail(proxy) -> None:
    silent = Upstream(silent=True)
    try:
        dp = proxy(dns_config(silent.address, {}))
        reply = ask(dns_port(dp), query("fwd.example.org", 77))
        assert reply is not None, "SERVFAIL after the forwarding timeout"
        assert struct.unpack("!H", reply[:2])[0] == 77
        assert reply[3] & 0x0F == 2, "SERVFAIL"
        assert len(silent.ids) == 1
        wait_until(lambda: dp.stats()["dns_server"]["failed"] == 1, what="the failure counted")
        assert re.search(r'^meshctl_dns_queries_total\{[^}]*result="failed"\} 1', dp.metrics(), flags=re.M)
    finally:
        silent.close()


def test_an_update_changes_records_on_the_same_socket(proxy, upstream) -> None:
    dp = proxy(dns_config(upstream.address, {"pricing": ["240.240.0.7"]}))
    port = dns_port(dp)
    assert dig(port, "pricing")[1][0].split()[-1] == "240.240.0.7"

    # Asking for the port it got keeps the socket, as listeners do.
    dp.update(dns_config(upstream.address, {"reviews": ["240.240.0.8"]}, address=f"127.0.0.1:{port}"))
    assert dns_port(dp) == port
    status, answers, _ = dig(port, "reviews")
    assert (status, answers[0].split()[-1]) == ("NOERROR", "240.240.0.8")
    status, _, _ = dig(port, "pricing")
    assert status == "NXDOMAIN", "no longer ours: forwarded, and the upstream does not know it"

    # Without the section the socket closes (its task ends right after the update).
    dp.update({"listeners": []})
    assert dp.stats()["dns_server"]["address"] is None

    def refused() -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.5)
            s.connect(("127.0.0.1", port))
            s.send(query("reviews", 1))
            try:
                s.recv(512)
            except ConnectionRefusedError:
                return True
            except TimeoutError:
                return False
            raise AssertionError("answered after the section was removed")

    wait_until(refused, what="the DNS port to close")


def test_malformed_packets_get_no_reply_and_the_server_keeps_answering(proxy, upstream) -> None:
    dp = proxy(dns_config(upstream.address, {"pricing": ["240.240.0.7"]}))
    port = dns_port(dp)
    good = query("pricing", 5)
    response = bytearray(good)
    response[2] |= 0x80
    two_questions = bytearray(good)
    two_questions[5] = 2
    pointer = good[:12] + b"\xc0\x0c\x00\x01\x00\x01"
    long_label = good[:12] + bytes([64]) + b"x" * 64 + b"\0\0\1\0\1"
    cut = [b"", b"\x00", good[:11], good[:15]]
    bad = [*cut, bytes(response), bytes(two_questions), pointer, long_label, b"\xff" * 600]

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("127.0.0.1", port))
        for packet in bad:
            s.send(packet)
        # Counted as received and dropped: nothing was sent back.
        wait_until(lambda: dp.stats()["dns_server"]["failed"] == len(bad), what="the packets dropped")
        s.setblocking(False)
        with pytest.raises(BlockingIOError):
            s.recv(512)
        s.setblocking(True)
        s.settimeout(5)
        s.send(good)
        reply = s.recv(512)
    assert struct.unpack("!H", reply[:2])[0] == 5
    assert reply[-4:] == bytes([240, 240, 0, 7])
    assert upstream.ids == []
    stats = dp.stats()["dns_server"]
    assert (stats["queries"], stats["answered"], stats["failed"]) == (len(bad) + 1, 1, len(bad))


def test_dns_section_errors_name_the_field() -> None:
    from meshctl import ConfigError, validate_config

    with pytest.raises(ConfigError) as exc:
        validate_config({"dns": {"address": "nowhere", "records": {"a": ["::1"]}, "upstream": ["10.0.0.1"]}})
    paths = {path for path, _ in exc.value.errors}
    assert paths == {"dns.address", "dns.records.a[0]", "dns.upstream[0]"}
