"""The dashboard's files as the control plane serves them (tests/e2e/test_dashboard.py drives the
pages in a browser): every file the page imports ships and is served with the security headers,
nothing names another origin, and no request path reaches the filesystem."""

from __future__ import annotations

import re

import httpx

from meshctl.control.kinds import REGISTRY
from meshctl.control.routers import ui
from meshproc import ControlPlane, module_control_plane

cp = module_control_plane()

#: What a JS module imports, and what index.html links.
IMPORT = re.compile(r"""(?:from|import)\s+["']\./([\w.-]+)["']""")
LINK = re.compile(r"""(?:src|href)="([\w.-]+)\"""")
#: The SVG namespace is a name, never fetched.
NAMESPACE = "http://www.w3.org/2000/svg"


def test_every_file_the_page_needs_ships_and_is_served_locked_down(cp: ControlPlane) -> None:
    needed = set(LINK.findall((ui.ROOT / "index.html").read_text()))
    for js in ui.ROOT.glob("*.js"):
        needed |= set(IMPORT.findall(js.read_text()))
    assert needed <= set(ui.FILES), needed - set(ui.FILES)
    for name in ["", *sorted(needed)]:
        r = httpx.get(f"{cp.url}/ui/{name}", timeout=10)
        assert r.status_code == 200, name
        assert r.headers["content-security-policy"] == ui.CSP
        assert r.headers["x-content-type-options"] == "nosniff"
    assert httpx.get(f"{cp.url}/ui/app.js", timeout=10).headers["content-type"].startswith("text/javascript")


def test_no_file_names_another_origin() -> None:
    for path in ui.FILES.values():
        text = path.read_text().replace(NAMESPACE, "")
        assert not re.search(r"(https?:)?//[\w.-]+\.[a-z]{2,}", text), path.name
        if path.suffix == ".css":  # nothing fetched from the style sheet at all
            assert "@import" not in text and "url(" not in text, path.name


def test_inline_code_is_refused_by_the_policy() -> None:
    assert "unsafe-inline" not in ui.CSP and "unsafe-eval" not in ui.CSP
    index = (ui.ROOT / "index.html").read_text()
    assert re.findall(r"<script[^>]*>(.*?)</script>", index, re.S) == [""]
    assert " style=" not in index and "<style" not in index
    assert not re.search(r"\bon\w+=", index)  # no inline event handlers


def test_paths_outside_the_files_are_404(cp: ControlPlane) -> None:
    for path in ("/ui/../routers/ui.py", "/ui/%2e%2e/app.py", "/ui/nothing.js", "/ui/ui.py"):
        assert httpx.get(f"{cp.url}{path}", timeout=10).status_code == 404, path


def test_kinds_come_from_the_registry(cp: ControlPlane) -> None:
    got = httpx.get(f"{cp.url}/ui/kinds.json", timeout=10).json()
    assert got == [{"kind": e.name, "plural": e.plural} for e in REGISTRY]
