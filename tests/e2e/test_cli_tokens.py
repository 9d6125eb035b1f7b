"""`meshctl token create|list|revoke` as a user runs them (the real binary,
a real control plane): a join token a real sidecar joins with, shown revoked
once revoked; a sidecar outliving its join token's expiry; reader tokens for
reading verbs; rotation; the last admin token kept; the join command pinning
an HTTPS control plane's CA."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from helpers import wait_until
from meshctl.control.ca.serving import serving_ca_hash
from meshctl.demo.backends import DemoBackend
from meshproc import ControlPlane, Sidecar, service


def meshctl(cp: ControlPlane, *args: str, data_dir: Path, token: str | None = None) -> subprocess.CompletedProcess[str]:
    """`meshctl ARGS` with `data_dir` as its data dir (its admin.token and reader.token, if any) and
    `token` as $MESHCTL_TOKEN when given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHCTL_")}
    env |= {"COLUMNS": "200", "NO_COLOR": "1", "MESHCTL_SERVER": cp.url, "MESHCTL_DATA_DIR": str(data_dir)}
    if token is not None:
        env["MESHCTL_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "meshctl", *args], capture_output=True, text=True, env=env, timeout=60)


def test_a_join_token_from_the_cli_joins_a_sidecar_which_shows_revoked_once_it_is(
    cp: ControlPlane, backend: Callable[..., DemoBackend], tmp_path: Path
) -> None:
    cp.apply(service("pricing"))
    made = meshctl(cp, "token", "create", "--service", "pricing", "--name", "pricing-ci", data_dir=cp.data_dir)
    assert made.returncode == 0, made.stderr
    (token,) = made.stdout.splitlines()  # the token alone on stdout: `> pricing.token` works
    assert token.startswith("mesh-join-")
    assert "(pricing-ci) for default/pricing, expires in 23h" in made.stderr, made.stderr
    join = f"meshctl proxy --control-plane {cp.url} --namespace default --service pricing --token-file pricing.token"
    assert join in made.stderr

    listed = json.loads(meshctl(cp, "token", "list", "-o", "json", data_dir=cp.data_dir).stdout)
    row = next(t for t in listed if t["name"] == "pricing-ci")
    assert "token" not in row and row["role"] == "join" and row["service"] == "default/pricing"
    table = meshctl(cp, "token", "list", "--service", "pricing", data_dir=cp.data_dir).stdout.splitlines()
    assert table[0].split() == ["ID", "NAME", "ROLE", "SERVICE", "AGE", "EXPIRES"]
    assert [line.split()[:4] for line in table[1:]] == [[str(row["id"]), "pricing-ci", "join", "default/pricing"]]
    assert table[1].split()[-2:] == ["in", "23h"]

    app = backend("pricing")
    sidecar = Sidecar(cp, "pricing", app.port, tmp_path, token).start()
    try:
        (registered,) = cp.sidecars()
        assert registered["token_revoked"] is False
        revoked = meshctl(cp, "token", "revoke", str(row["id"]), data_dir=cp.data_dir)
        assert revoked.returncode == 0 and revoked.stdout.strip() == f"token {row['id']} revoked"
        (shown,) = cp.sidecars()
        assert shown["token_revoked"] is True
        # Its heartbeats are refused now: the sidecar leaves the mesh when its TTL runs out.
        wait_until(lambda: not cp.sidecars()[0]["live"], timeout=60, what="the revoked sidecar to stop being live")
    finally:
        sidecar.stop()


def test_reading_verbs_use_the_reader_token_and_rotation_replaces_it(cp: ControlPlane, tmp_path: Path) -> None:
    """With no token given, reading verbs take reader.token from the data dir and writes admin.token."""
    here = cp.data_dir
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text("kind: Service\nmetadata: {name: catalog}\n")
    assert meshctl(cp, "apply", "-f", str(mesh), data_dir=here).returncode == 0
    assert meshctl(cp, "get", "svc", data_dir=here).returncode == 0

    readers = json.loads(meshctl(cp, "token", "list", "--role", "reader", "-o", "json", data_dir=here).stdout)
    (boot,) = readers
    assert meshctl(cp, "token", "revoke", str(boot["id"]), data_dir=here).returncode == 0
    # `get` used reader.token: now refused, saying which token; writes still use admin.token.
    refused = meshctl(cp, "get", "svc", data_dir=here)
    assert refused.returncode == 1
    assert f"the token from {here / 'reader.token'} was refused" in refused.stderr, refused.stderr
    assert meshctl(cp, "history", data_dir=here).returncode == 1
    assert meshctl(cp, "apply", "-f", str(mesh), data_dir=here).returncode == 0
    # An explicit token wins over reader.token.
    assert meshctl(cp, "get", "svc", data_dir=here, token=cp.token("admin")).returncode == 0

    # Rotation: a successor, written where the old one was, and reading works again.
    made = meshctl(cp, "token", "create", "--role", "reader", "--name", "dashboard", data_dir=here)
    assert made.returncode == 0, made.stderr
    assert "reader token" in made.stderr and "(dashboard), never expiring" in made.stderr, made.stderr
    (here / "reader.token").write_text(made.stdout)
    got = meshctl(cp, "get", "svc", data_dir=here)
    assert got.returncode == 0, got.stderr
    assert "catalog" in got.stdout


def test_the_last_admin_token_is_kept_and_bad_input_is_refused_before_any_call(cp: ControlPlane) -> None:
    here = cp.data_dir
    (admin,) = json.loads(meshctl(cp, "token", "list", "--role", "admin", "-o", "json", data_dir=here).stdout)
    kept = meshctl(cp, "token", "revoke", str(admin["id"]), data_dir=here)
    assert kept.returncode == 1
    assert "409" in kept.stderr and "last live admin token" in kept.stderr, kept.stderr
    assert meshctl(cp, "token", "list", data_dir=here).returncode == 0  # still works

    for args, said in [
        (["--service", "pricing", "--expires", "soon"], "--expires 'soon'"),
        (["--role", "admin", "--service", "pricing"], "--service is for join tokens"),
        ([], "a join token needs --service"),
    ]:
        bad = meshctl(cp, "token", "create", *args, data_dir=here)
        assert bad.returncode == 2 and said in bad.stderr, bad.stderr
    ghost = meshctl(cp, "token", "create", "--service", "ghost", data_dir=here)
    assert ghost.returncode == 1 and "service default/ghost does not exist" in ghost.stderr, ghost.stderr
    gone = meshctl(cp, "token", "revoke", "99999", data_dir=here)
    assert gone.returncode == 1 and "token 99999 not found" in gone.stderr
    never = meshctl(cp, "token", "create", "--role", "admin", "--expires", "never", "-o", "json", data_dir=here)
    assert json.loads(never.stdout)["expires_at"] is None


def test_the_join_command_carries_the_pin_of_an_https_control_plane(tmp_path: Path) -> None:
    plane = ControlPlane(tmp_path / "cp", args=("--tls",), scheme="https")
    plane.data_dir.mkdir()
    plane.start()
    try:
        plane.apply(service("pricing"))
        made = meshctl(plane, "token", "create", "--service", "pricing", data_dir=plane.data_dir)
        assert made.returncode == 0, made.stderr
        pin = serving_ca_hash(plane.data_dir)
        assert pin is not None and pin.startswith("sha256:")
        join = f"meshctl proxy --control-plane {plane.url} --ca-hash {pin} --namespace default --service pricing"
        assert join in made.stderr, made.stderr
    finally:
        plane.stop()


def test_a_sidecar_keeps_serving_past_its_join_tokens_expiry_until_it_is_revoked(
    cp: ControlPlane, backend: Callable[..., DemoBackend], tmp_path: Path
) -> None:
    """kubeadm's meaning of a join token's expiry: it limits joining. The sidecar that joined keeps
    heartbeating, restarts (a new SVID included), and only revoking the token stops it."""
    cp.apply(service("ledger"))
    made = meshctl(cp, "token", "create", "--service", "ledger", "-o", "json", data_dir=cp.data_dir)
    assert made.returncode == 0, made.stderr
    token = json.loads(made.stdout)
    sidecar = Sidecar(cp, "ledger", backend("ledger").port, tmp_path, token["token"]).start()
    newcomer = Sidecar(cp, "ledger", backend("ledger-2").port, tmp_path / "new", token["token"])
    newcomer.workdir.mkdir()

    def row() -> dict[str, Any]:
        return next(s for s in cp.sidecars() if s["inbound_port"] == sidecar.inbound_port)

    try:
        wait_until(lambda: row()["live"], timeout=30, what="the sidecar to join")
        joined = row()["id"]
        # Its token expires in two seconds (set in the database, as --expires 2s would).
        expires = datetime.now(UTC) + timedelta(seconds=2)
        cp.sql(
            "UPDATE apitoken SET expires_at = :at WHERE id = :id",
            {"at": expires, "id": token["id"]},
        )
        wait_until(lambda: row()["token_expired"], timeout=30, what="the token to show expired")

        # Well past the expiry (the registration lives 5 s without a heartbeat), it still heartbeats.
        def beat_since(at: datetime) -> bool:
            now = row()
            return bool(now["live"] and datetime.fromisoformat(now["last_seen"]) > at)

        wait_until(lambda: beat_since(expires + timedelta(seconds=12)), timeout=60, what="heartbeats past expiry")
        assert (row()["token_revoked"], row()["id"]) == (False, joined)
        assert sidecar.ready()
        listed = json.loads(meshctl(cp, "token", "list", "-o", "json", data_dir=cp.data_dir).stdout)
        assert next(t for t in listed if t["id"] == token["id"])["expired"] is True
        checked = json.loads(meshctl(cp, "check", "-o", "json", data_dir=cp.data_dir).stdout)
        about = [(f["code"], f["severity"]) for f in checked["findings"] if f["resource"]["name"] == str(joined)]
        assert ("MC0105", "info") in about and not any(code == "MC0104" for code, _ in about), about

        # The same instance restarts: it gets a new SVID and registers again with the expired token.
        before = sidecar.stats()["identity"]["not_after"]
        sidecar.stop()
        sidecar.start()
        wait_until(lambda: row()["live"], timeout=30, what="the restarted sidecar to register again")
        assert row()["id"] == joined and sidecar.stats()["identity"]["not_after"] != before
        # A new instance cannot join with it.
        with pytest.raises(AssertionError, match="join token expired at"):
            newcomer.start()
        assert [s["inbound_port"] for s in cp.sidecars()].count(newcomer.inbound_port) == 0

        # Revoked, it is cut off: heartbeats refused, it drops out of the mesh.
        assert meshctl(cp, "token", "revoke", str(token["id"]), data_dir=cp.data_dir).returncode == 0
        assert row()["token_revoked"] is True
        wait_until(lambda: not row()["live"], timeout=60, what="the revoked sidecar to stop being live")
    finally:
        sidecar.stop()
        newcomer.stop()
