"""Pointing the control plane at PostgreSQL: a ``postgresql://`` URL means
psycopg 3 (the ``meshctl[postgres]`` extra); without the driver, or with a
server that does not answer, ``meshctl control-plane`` says so in one line
instead of a traceback; a URL with a percent-escape migrates (alembic's
config file would have read it as interpolation); replicas started at once on
an empty database migrate it once."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from sqlalchemy import text

import pg
from helpers import unused_port
from meshctl.control.db import make_engine, migrate


def control_plane(tmp_path: Path, url: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MESHCTL_")} | env
    cmd = [sys.executable, "-m", "meshctl", "control-plane", "--data-dir", str(tmp_path / "cp")]
    cmd += ["--port", str(unused_port()), "--database-url", url]
    return subprocess.run(cmd, capture_output=True, text=True, env=environ, timeout=60)


def test_without_the_driver_the_error_names_the_extra_to_install(tmp_path: Path) -> None:
    # A Python where psycopg does not import, as after `pip install meshctl` without the extra.
    shadow = tmp_path / "no-psycopg" / "psycopg"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'psycopg'\", name='psycopg')\n")
    path = os.pathsep.join([str(shadow.parent), *filter(None, [os.environ.get("PYTHONPATH")])])
    out = control_plane(tmp_path, "postgresql://mesh@db.example/mesh", PYTHONPATH=path)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert "the postgresql driver is not installed" in out.stderr
    assert "pip install 'meshctl[postgres]'" in out.stderr
    assert not (tmp_path / "cp" / "mesh.db").exists()


def test_a_database_that_does_not_answer_is_one_line_and_exit_1(tmp_path: Path) -> None:
    out = control_plane(tmp_path, f"postgresql://postgres@127.0.0.1:{unused_port()}/mesh")
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert "the database cannot be reached: connection failed" in out.stderr


def test_a_url_without_a_driver_means_psycopg_3_and_percent_escapes_migrate() -> None:
    url = pg.database("setup")
    # postgresql://, as an operator writes it; an escaped application name (%20) in the query.
    plain = url.replace("postgresql+psycopg://", "postgresql://") + "?application_name=mesh%20control"
    migrate(plain)
    engine = make_engine(plain)
    try:
        with engine.connect() as conn:
            assert engine.dialect.driver == "psycopg"
            assert conn.execute(text("SHOW application_name")).scalar() == "mesh control"
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    finally:
        engine.dispose()


def test_replicas_starting_at_once_migrate_one_database_once() -> None:
    """Three control planes started together on an empty database: one migrates, the others
    wait for it and find the database at head."""
    url = pg.database("together")
    start = threading.Barrier(3)
    failures: list[BaseException] = []

    def one() -> None:
        start.wait(30)
        try:
            migrate(url)
        except BaseException as e:  # reported by the test
            failures.append(e)

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures, failures
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    finally:
        engine.dispose()
