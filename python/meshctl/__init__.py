"""meshctl: a service mesh that installs with pip.

The data plane is the Rust extension ``meshctl._core``; this package is its
public face and the Python tools around it (CLI, and later the control plane).
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
