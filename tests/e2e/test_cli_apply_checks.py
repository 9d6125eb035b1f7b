"""`meshctl apply -f` as a user runs it against a real control plane (issue 13,
items 1, 4, 5 and 6): unknown fields named by their path, indices counted from
0 in the field path and in the file alike, header matches by regular
expression shown by `get`, and files over the request limits refused before
they are parsed or sent."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import unused_port
from meshctl.control import limits
from meshproc import ControlPlane, module_control_plane

cp = module_control_plane()


def meshctl(cp: ControlPlane, *args: str, stdin: bytes | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MESHCTL_")}
    environ |= {"COLUMNS": "200", "MESHCTL_SERVER": cp.url, "MESHCTL_TOKEN": cp.token("admin"), **env}
    out = subprocess.run(
        [sys.executable, "-m", "meshctl", *args], capture_output=True, input=stdin, env=environ, timeout=120
    )
    result = subprocess.CompletedProcess(out.args, out.returncode, out.stdout.decode(), out.stderr.decode())
    assert "Traceback" not in result.stderr, result.stderr
    return result


def svc(name: str, ns: str, **spec: Any) -> dict[str, Any]:
    return {"kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": {"ports": [{"port": 80}], **spec}}


def write(path: Path, *docs: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False, explicit_start=True))
    return path


def test_an_unknown_field_is_named_by_its_path_and_its_place_in_the_file(cp: ControlPlane, tmp_path: Path) -> None:
    path = write(tmp_path / "typo.yaml", svc("web", "typo"), svc("catalog", "typo", prots=[{"port": 80}]))
    out = meshctl(cp, "apply", "-f", str(path))
    assert out.returncode == 1 and out.stdout == ""
    # One way of counting: from 0, in the request's field path and in the file.
    assert out.stderr.splitlines() == [
        "error: 422 invalid input",
        f"  documents[1].spec.prots: unknown field  (Service typo/catalog, {path}[1])",
    ]
    assert meshctl(cp, "get", "svc", "web", "-n", "typo").returncode == 1  # nothing written


def test_a_header_regular_expression_is_applied_and_shown(cp: ControlPlane, tmp_path: Path) -> None:
    route = {
        "kind": "HTTPRoute",
        "metadata": {"name": "users", "namespace": "regex"},
        "spec": {
            "parentRefs": [{"name": "catalog"}],
            "rules": [
                {
                    "matches": [{"headers": [{"type": "RegularExpression", "name": "x-user", "value": "a.+"}]}],
                    "backendRefs": [{"name": "catalog"}],
                }
            ],
        },
    }
    path = write(tmp_path / "regex.yaml", svc("catalog", "regex"), route)
    out = meshctl(cp, "apply", "-f", str(path))
    assert out.returncode == 0, out.stderr
    assert "x-user~a.+ -> catalog" in meshctl(cp, "get", "httproutes", "-n", "regex").stdout
    # What get -o yaml prints applies back unchanged.
    again = tmp_path / "again.yaml"
    again.write_text(meshctl(cp, "get", "httproute", "regex/users", "-o", "yaml").stdout)
    assert meshctl(cp, "apply", "-f", str(again)).stdout == "httproute/regex/users unchanged\n"


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(cp: ControlPlane, tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    one = yaml.safe_dump(svc("s", "big"), explicit_start=True)
    big.write_text(one * (limits.MAX_REQUEST_BYTES // len(one) + 1))
    size = big.stat().st_size
    # Refused without parsing and without the control plane: this server does not exist.
    nowhere = f"http://127.0.0.1:{unused_port()}"
    started = time.monotonic()
    out = meshctl(cp, "apply", "-f", str(big), MESHCTL_SERVER=nowhere)
    assert out.returncode == 2
    assert out.stderr == (
        f"error: {big}: input too large: {size} bytes, over the limit of 4 MiB (MESHCTL_MAX_REQUEST_BYTES);"
        " apply the documents in several smaller files\n"
    )
    assert time.monotonic() - started < 20  # a process start; parsing it took ~30 s before
    out = meshctl(cp, "apply", "-f", "-", stdin=big.read_bytes(), MESHCTL_SERVER=nowhere)
    assert out.returncode == 2 and "<stdin>: input too large: more than 4194304 bytes" in out.stderr

    # The same variable the control plane reads raises the CLI's limit (this server's stays 4 MiB).
    raised = {"MESHCTL_MAX_REQUEST_BYTES": str(2 * size), "MESHCTL_APPLY_MAX_DOCUMENTS": "100000"}
    out = meshctl(cp, "apply", "-f", str(big), **raised)
    assert out.returncode == 1
    assert out.stderr.startswith("error: 413 request too large: "), out.stderr


def test_more_documents_than_one_apply_takes_are_refused(cp: ControlPlane, tmp_path: Path) -> None:
    many = write(tmp_path / "many.yaml", *(svc(f"s{i}", "many") for i in range(limits.MAX_DOCUMENTS + 1)))
    out = meshctl(cp, "apply", "-f", str(many))
    assert out.returncode == 2
    assert out.stderr == (
        f"error: {many}: too many documents: 1001, at most 1000 per apply (MESHCTL_APPLY_MAX_DOCUMENTS);"
        " apply them in several smaller files\n"
    )


@pytest.mark.parametrize("suffix", ["yaml", "json"])
def test_a_large_file_under_the_limits_applies(cp: ControlPlane, tmp_path: Path, suffix: str) -> None:
    """1000 documents of ~3.5 KiB each (3.5 MiB): read with libyaml or json, not pure-Python YAML."""
    docs = [svc(f"s{i}", f"large-{suffix}", ports=[{"name": f"p{j}", "port": 1000 + j} for j in range(60)])
            for i in range(limits.MAX_DOCUMENTS)]  # fmt: skip
    path = tmp_path / f"large.{suffix}"
    if suffix == "json":
        import json

        path.write_text(json.dumps(docs))
    else:
        write(path, *docs)
    assert path.stat().st_size < limits.MAX_REQUEST_BYTES
    out = meshctl(cp, "apply", "-f", str(path), "--dry-run")
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == limits.MAX_DOCUMENTS
