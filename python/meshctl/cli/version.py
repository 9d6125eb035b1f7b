"""``meshctl version``: this client's versions and the control plane's
(``GET /api/v1/version``); the data plane is the extension's version. When the
control plane cannot be reached (or refuses), the client's part is still
printed, then the reason, and the exit code is 1."""

from __future__ import annotations

from typing import Any

from meshctl.cli import api, options
from meshctl.cli.options import Format


def version(
    output: options.TableOutput = Format.table,
    server: options.Server = options.DEFAULT_SERVER,
    token: options.Token = None,
    token_file: options.TokenFile = None,
) -> None:
    """The versions of this client (meshctl, its data plane, Python) and of the control plane."""
    from meshctl.client import ApiError, Unreachable
    from meshctl.versions import versions

    doc: dict[str, Any] = {"client": versions(), "server": None}
    client = api.connect(server, token, token_file)
    problem: str | None = None
    try:
        doc["server"] = client.get("/api/v1/version")
    except ApiError as e:
        problem = api.error_lines(e, client)[0]
    except Unreachable as e:
        problem = f"cannot reach the control plane at {e}"
    if not api.printed(output, doc):
        t = api.table("", "MESHCTL", "DATA PLANE", "PYTHON", "API")
        for side in ("client", "server"):
            v = doc[side]
            if v is not None:
                api.add_row(t, side, v["meshctl"], v["data_plane"], v["python"], v.get("api", "v1"))
        api.console().print(t)
    if problem is not None:
        api.fail(f"server: {problem}", 1)
