"""The documentation site: the reference generators cover every CLI verb and option, every REST
operation and schema, every data-plane config field; and `mkdocs build --strict` passes (when the
docs extra is installed, as CI does)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "docs"))

from refgen import api, checks, cli, config  # noqa: E402  (found through docs/ on the path)
from refgen.markdown import anchor  # noqa: E402


def _sections(page: str) -> dict[str, str]:
    """Each heading's `{#id}` -> the text up to the next heading of any level."""
    parts = re.split(r"^#{1,6} .*\{#([^}]+)\}\s*$", page, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


# === CLI ===


def test_cli_reference_has_every_verb_and_option() -> None:
    page = cli.render()
    sections = _sections(page)
    entries = list(cli.walk(cli.root_command()))[1:]
    names = [name for name, _, _ in entries]
    for expected in (
        "meshctl apply",
        "meshctl get",
        "meshctl explain",
        "meshctl status",
        "meshctl proxy",
        "meshctl ca rotate start",
    ):
        assert expected in names
    for name, command, _ in entries:
        section = sections[anchor("cli", name)]
        verb = name.split(" ", 1)[1]
        module = cli.ARGPARSE_VERBS.get(verb)
        if module:
            parser = importlib.import_module(module).parser()
            flags = [s for a in parser._actions for s in a.option_strings if a.help != "==SUPPRESS=="]
        else:
            flags = [o for p in command.params if p.param_type_name == "option" and not p.hidden for o in p.opts]
        assert flags or hasattr(command, "list_commands"), name
        for flag in flags:
            assert flag in section, f"{name}: {flag} missing"
        if command.help:  # its help's first sentence starts the section's prose
            assert command.help.split()[0] in section, name


def test_cli_reference_links_resolve() -> None:
    page = cli.render()
    ids = set(_sections(page))
    for target in re.findall(r"\]\(#([^)]+)\)", page):
        assert target in ids, target


# === REST API ===


def test_api_reference_has_every_operation_and_schema() -> None:
    doc = api.load()
    page = api.render()
    sections = _sections(page)
    ops = api.operations(doc)
    assert len(ops) >= len(doc["paths"])
    for method, path, _ in ops:
        assert f"#### {method} `{path}`" in page, (method, path)
        assert anchor("api", f"{method} {path}") in sections
    for name in doc["components"]["schemas"]:
        assert anchor("schema", name) in sections, name
    for target in re.findall(r"\]\(#([^)]+)\)", page):
        assert target in sections, target


def test_api_reference_shows_parameters_bodies_and_fields() -> None:
    page = api.render()
    sections = _sections(page)
    join = sections[anchor("api", "POST /api/v1/services/{namespace}/{name}/join-tokens")]
    assert "`namespace` | path | yes | string" in join
    assert "[JoinToken](#schema-jointoken)" in join
    apply = sections[anchor("api", "POST /api/v1/apply")]
    assert "Request body (required)" in apply and "array of [ApplyResult](#schema-applyresult)" in apply
    assert "| `token` | string | yes |" in sections[anchor("schema", "JoinToken")]


def test_api_renderer_types() -> None:
    assert api.type_of({"anyOf": [{"type": "string"}, {"type": "null"}]}) == "string or null"
    assert api.type_of({"type": "object", "additionalProperties": {"type": "integer"}}) == "object (string to integer)"
    assert api.type_of({"enum": ["a", "b"]}) == 'one of `"a"`, `"b"`'


# === data-plane config ===


def test_config_reference_has_every_section_and_field() -> None:
    from meshctl import dataplane_config

    page = config.render()
    sections = _sections(page)
    typed_dicts = [
        obj
        for obj in vars(dataplane_config).values()
        if isinstance(obj, type) and typing.is_typeddict(obj) and obj.__module__ == dataplane_config.__name__
    ]
    assert len(typed_dicts) > 30
    for cls in typed_dicts:
        section = sections[anchor("config", cls.__name__)]
        for key in typing.get_type_hints(cls):
            row = re.search(rf"^\| `{key}` \|.*$", section, flags=re.M)
            assert row, f"{cls.__name__}.{key} missing"
            cells = [c.strip() for c in row.group(0).strip("|").split("|")]
            assert (cells[2] == "yes") == (key in cls.__required_keys__), f"{cls.__name__}.{key}"
    for target in re.findall(r"\]\(#([^)]+)\)", page):
        assert target in sections or target == "value-types", target


def test_config_reference_carries_the_field_comments() -> None:
    sections = _sections(config.render())
    retry = sections[anchor("config", "RetryConfig")]
    assert "Tries after the first; default 2; 0 disables." in retry
    route = sections[anchor("config", "RouteConfig")]
    assert "[RetryConfig](#config-retryconfig)" in route
    rewrite = sections[anchor("config", "RewriteConfig")]
    assert "(from [PathModifier](#config-pathmodifier))" in rewrite  # inherited fields shown


# === check codes ===


def test_check_codes_page_has_every_code() -> None:
    from meshctl.control.analysis.codes import CHECKS

    page = checks.render()
    for c in CHECKS:
        assert f"| `{c.code}` | {c.severity} |" in page, c.code


# === the site ===


@pytest.mark.skipif(importlib.util.find_spec("material") is None, reason="the docs extra (mkdocs-material)")
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    quickstart = (tmp_path / "site" / "quickstart" / "index.html").read_text()
    assert "A mesh by hand on one machine" in quickstart  # the README's section, included
    cli_page = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    assert 'id="cli-meshctl-apply"' in cli_page
