"""Labels as a user works with them (the real `meshctl` against a real control
plane): `apply -f` keeps them, `get -l` selects on them (`=`, `!=`), `-o
wide` shows them, `get -o yaml` applies back unchanged, and `diff -f` shows
a change of labels alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from meshproc import Run, module_control_plane, module_meshctl, ok

cp = module_control_plane()
meshctl = module_meshctl(COLUMNS="250", NO_COLOR="1")


def svc(name: str, labels: dict[str, str], **metadata: Any) -> dict[str, Any]:
    meta = {"name": name, "namespace": "shop", "labels": labels, **metadata}
    return {"kind": "Service", "metadata": meta, "spec": {"ports": [{"port": 80}]}}


def names(table: str) -> list[str]:
    """The NAME column of a `get` table."""
    return [line.split()[1] for line in table.splitlines()[1:] if line.strip() and not line.startswith(("─", "━"))]


@pytest.fixture(scope="module")
def shop(meshctl: Run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("docs") / "shop.yaml"
    docs = [
        svc("web", {"app": "web", "tier": "front"}, annotations={"owner": "team web"}),
        svc("api", {"app": "api", "tier": "back"}),
        svc("db", {"app": "db", "tier": "db"}),
        svc("plain", {}),
    ]
    path.write_text(yaml.safe_dump_all(docs))
    assert ok(meshctl("apply", "-f", str(path))).count("created") == 4
    return path


def test_get_selects_on_the_labels_apply_kept(meshctl: Run, shop: Path) -> None:
    assert names(ok(meshctl("get", "services", "-n", "shop", "-l", "app=web"))) == ["web"]
    assert sorted(names(ok(meshctl("get", "services", "-n", "shop", "-l", "tier!=db")))) == ["api", "plain", "web"]
    assert sorted(names(ok(meshctl("get", "services", "-A", "-l", "tier,!app")))) == []
    wide = ok(meshctl("get", "services", "-n", "shop", "-o", "wide"))
    assert "LABELS" in wide.splitlines()[0]
    assert any("web" in line and "app=web,tier=front" in line for line in wide.splitlines())


def test_get_yaml_applies_back_unchanged(meshctl: Run, shop: Path, tmp_path: Path) -> None:
    out = ok(meshctl("get", "services", "web", "-n", "shop", "-o", "yaml"))
    doc = yaml.safe_load(out)
    assert doc["metadata"]["labels"] == {"app": "web", "tier": "front"}
    assert doc["metadata"]["annotations"] == {"owner": "team web"}
    again = tmp_path / "web.yaml"
    again.write_text(out)
    assert ok(meshctl("apply", "-f", str(again))).strip() == "service/shop/web unchanged"
    listed = ok(meshctl("get", "services", "-n", "shop", "-o", "json"))
    every = tmp_path / "all.json"
    every.write_text(listed)
    assert ok(meshctl("apply", "-f", str(every))).count("unchanged") == 4


def test_a_change_of_labels_alone_is_diffed_and_applied(meshctl: Run, shop: Path, tmp_path: Path) -> None:
    path = tmp_path / "relabel.yaml"
    path.write_text(yaml.safe_dump(svc("api", {"app": "api", "tier": "middle"})))
    out = meshctl("diff", "-f", str(path))
    assert out.returncode == 1, out.stderr
    assert "-    tier: back" in out.stdout and "+    tier: middle" in out.stdout
    assert ok(meshctl("apply", "-f", str(path))).strip() == "service/shop/api configured"
    assert names(ok(meshctl("get", "services", "-n", "shop", "-l", "tier=middle"))) == ["api"]
