"""The revision verbs and `explain` as a user runs them (the real `meshctl`
against a real control plane): `history` shows who made each change and why
(`--message/-m` on apply, delete and rollback), `rollback` with nothing to
undo records nothing and says so, `diff -f FILE` shows what an apply would
change with kubectl diff's exit codes (beside `diff REV [REV]`), and
`explain` refuses unknown services and prints structured JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from helpers import unused_port
from meshproc import Run, module_control_plane, module_meshctl, ok

cp = module_control_plane()
meshctl = module_meshctl(COLUMNS="250", NO_COLOR="1")


def svc(name: str, ns: str) -> dict[str, Any]:
    return {"kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": {"ports": [{"port": 80}]}}


def split(ns: str, *weights: int, filters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"backendRefs": [{"name": f"v{i}", "weight": w} for i, w in enumerate(weights, 1)]}
    if filters:
        rule["filters"] = filters
    spec = {"parentRefs": [{"name": "web"}], "rules": [rule]}
    return {"kind": "HTTPRoute", "metadata": {"name": "split", "namespace": ns}, "spec": spec}


def write(path: Path, *docs: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return str(path)


def history(meshctl: Run) -> list[dict[str, Any]]:
    return list(json.loads(ok(meshctl("history", "-o", "json"))))


def test_history_shows_who_made_each_change_and_why(meshctl: Run, tmp_path: Path) -> None:
    path = write(tmp_path / "mesh.yaml", svc("web", "hi"), svc("v1", "hi"), split("hi", 1))
    ok(meshctl("apply", "-f", path, "-m", "first cut"))
    first = history(meshctl)[-1]["id"]
    ok(meshctl("delete", "httproute", "hi/split", "--message", "not needed"))
    ok(meshctl("rollback", str(first), "-m", "needed after all"))
    ok(meshctl("apply", "-f", write(tmp_path / "v2.yaml", svc("v2", "hi"))))  # no message

    log = history(meshctl)[-4:]
    assert [(r["action"], r["author"], r["message"]) for r in log] == [
        ("apply", "admin", "first cut"),
        ("delete", "admin", "not needed"),
        ("rollback", "admin", "needed after all"),
        ("apply", "admin", None),
    ]
    table = ok(meshctl("history")).splitlines()
    assert table[0].split() == ["REVISION", "TIME", "ACTION", "KIND", "NAME", "AUTHOR", "MESSAGE"]
    row = next(line for line in table if line.split()[:1] == [str(first)])
    assert row.split()[-4:] == ["resources", "admin", "first", "cut"]

    # Too long a message is refused before anything is sent.
    refused = meshctl("apply", "-f", write(tmp_path / "v3.yaml", svc("v3", "hi")), "-m", "x" * 501)
    assert refused.returncode == 2 and "at most 500 characters" in refused.stderr
    assert history(meshctl)[-1]["id"] == log[-1]["id"]


def test_a_rollback_with_nothing_to_undo_records_nothing(meshctl: Run, tmp_path: Path) -> None:
    ok(meshctl("apply", "-f", write(tmp_path / "mesh.yaml", svc("same", "nil"))))
    before = history(meshctl)
    latest = before[-1]["id"]
    out = ok(meshctl("rollback", str(latest)))
    assert out == (
        f"nothing to roll back: every resource already is as it was at revision {latest}"
        f" (no revision recorded; the latest is {latest})\n"
    )
    assert history(meshctl) == before


def test_diff_f_shows_what_an_apply_would_change(meshctl: Run, tmp_path: Path) -> None:
    base = [svc("web", "df"), svc("v1", "df"), svc("v2", "df")]
    path = write(tmp_path / "mesh.yaml", *base, split("df", 90, 10))
    ok(meshctl("apply", "-f", path))
    log = history(meshctl)

    same = meshctl("diff", "-f", path)
    assert (same.returncode, same.stdout) == (0, "")
    assert "no changes" in same.stderr

    changed = meshctl("diff", "-f", write(tmp_path / "next.yaml", *base, split("df", 50, 50), svc("v3", "df")))
    assert changed.returncode == 1, changed.stderr
    lines = changed.stdout.splitlines()
    at = lines.index("configured httproute/df/split")
    assert lines[at + 1 : at + 3] == ["--- live", "+++ applied"]
    assert "-    weight: 90" in lines and "+    weight: 50" in lines and "-    weight: 10" in lines
    at = lines.index("created service/df/v3")
    assert lines[at + 1 : at + 3] == ["--- /dev/null", "+++ applied"]
    # The server's defaults are what the diff shows: the port's name and protocol, the mTLS mode.
    assert {"+- name: http", "+  protocol: http", "+mtls: STRICT"} <= set(lines[at:])
    assert "service/df/web" not in changed.stdout  # unchanged ones are not shown
    assert history(meshctl) == log  # a dry run: nothing written
    assert meshctl("get", "svc", "df/v3").returncode == 1

    # Errors exit 2 (1 means "differences"): a dangling reference, an unreachable server, bad usage.
    dangling = meshctl("diff", "-f", write(tmp_path / "bad.yaml", split("nowhere", 1)))
    assert dangling.returncode == 2
    assert "does not exist" in dangling.stderr and "bad.yaml" in dangling.stderr
    gone = meshctl("diff", "-f", path, "--server", f"http://127.0.0.1:{unused_port()}")
    assert gone.returncode == 2 and "cannot reach the control plane" in gone.stderr
    assert meshctl("diff", "1", "-f", path).returncode == 2
    assert meshctl("diff").returncode == 2
    assert meshctl("diff", "-f", str(tmp_path / "missing.yaml")).returncode == 2

    # `diff REV [REV]` still compares revisions.
    revision = log[-1]["id"]
    assert ok(meshctl("diff", str(revision))) == f"no changes from revision {revision} to {revision}\n"
    from_before = ok(meshctl("diff", str(revision - 1), str(revision))).splitlines()
    at = from_before.index("added httproute/df/split")
    assert from_before[at + 1 : at + 3] == ["--- /dev/null", f"+++ revision {revision}"]


def test_explain_refuses_unknown_services_and_its_json_is_structured(meshctl: Run, tmp_path: Path) -> None:
    headers = {"set": [{"name": "x-env", "value": "prod"}]}
    filters = [{"type": "RequestHeaderModifier", "requestHeaderModifier": headers}]
    ok(
        meshctl(
            "apply",
            "-f",
            write(tmp_path / "m.yaml", svc("web", "xp"), svc("v1", "xp"), split("xp", 1, filters=filters)),
        )
    )

    for args, missing in [
        (("--from", "xp/nope", "--to", "xp/web"), "xp/nope"),
        (("--from", "xp/v1", "--to", "xp/nope"), "xp/nope"),
        (("--from", "nope", "--host", "web.xp"), "default/nope"),
    ]:
        out = meshctl("explain", *args)
        assert out.returncode == 1, (args, out.stdout)
        assert out.stdout == "" and f"service {missing} not found" in out.stderr

    explained = json.loads(ok(meshctl("explain", "--from", "xp/v1", "--to", "xp/web", "-o", "json")))
    modifier = {"add": [], "remove": [], **headers}  # the server's defaults filled in
    assert explained["filters"] == [{"type": "RequestHeaderModifier", "requestHeaderModifier": modifier}]
    text = ok(meshctl("explain", "--from", "xp/v1", "--to", "xp/web")).splitlines()
    assert '  RequestHeaderModifier {"set": [{"name": "x-env", "value": "prod"}]}' in text
