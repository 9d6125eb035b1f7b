"""meshctl: a service mesh that installs with pip.

The data plane is the Rust extension ``meshctl._core``; this package is its
public face and the Python around it: the CLI (``cli``), the sidecar that runs
the data plane and keeps its config and identity fresh (``sidecar``), and the
control plane (``control``).
"""

from meshctl._core import Bench, BenchBackend, BindError, ConfigError, DataPlane, __version__, validate_config

__all__ = [
    "Bench",
    "BenchBackend",
    "BindError",
    "ConfigError",
    "DataPlane",
    "__version__",
    "validate_config",
]
