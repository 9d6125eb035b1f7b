"""What this install is: the meshctl package, its data plane (the Rust
extension ``meshctl._core``) and the Python running them. ``meshctl version``
prints it, ``GET /api/v1/version`` answers it, and every sidecar and gateway
reports ``agent()`` in its registration (``SidecarPublic.version``), so that
``meshctl check`` can find a mesh running mixed versions.
"""

from __future__ import annotations

import platform
from importlib import metadata

from meshctl import _core


def versions() -> dict[str, str]:
    """{"meshctl", "data_plane", "python"}. The two differ only in an editable install whose
    extension was not rebuilt: the package's from its metadata, the data plane's from the extension."""
    try:
        package = metadata.version("meshctl")
    except metadata.PackageNotFoundError:  # run from a source tree without an install
        package = _core.__version__
    return {"meshctl": package, "data_plane": _core.__version__, "python": platform.python_version()}


def agent() -> str:
    """What a sidecar reports: `meshctl 0.1.0 / data plane 0.1.0`."""
    v = versions()
    return f"meshctl {v['meshctl']} / data plane {v['data_plane']}"
