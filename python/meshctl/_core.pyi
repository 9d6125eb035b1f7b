"""Type stubs for the Rust extension (hand-written; checked by mypy.stubtest)."""

from typing import Any, Final, final

from meshctl.dataplane_config import DataPlaneConfig

__all__ = [
    "Bench",
    "BenchBackend",
    "BindError",
    "ConfigError",
    "DataPlane",
    "__version__",
    "validate_config",
]

__version__: Final[str]

class ConfigError(ValueError):
    """The config is invalid; ``errors`` lists every problem as (path, message)."""

    errors: list[tuple[str, str]]

class BindError(OSError):
    """A listener could not bind its address."""

# A config is YAML/JSON text or a document (any dict `json.dumps` takes); a `DataPlaneConfig` is
# one the type checker has seen the shape of. Rust checks every field either way.
_Config = str | DataPlaneConfig | dict[str, Any]

@final
class DataPlane:
    """The data plane: listeners, routes and clusters served from Rust threads."""

    def __new__(cls, config: _Config, *, workers: int | None = None) -> DataPlane: ...
    def start(self) -> None: ...
    def update(self, config: _Config) -> int: ...
    def stop(self, grace_seconds: float = 10.0) -> None: ...
    def stats(self) -> dict[str, Any]: ...
    def config(self) -> dict[str, Any]: ...
    def addresses(self) -> dict[str, str]: ...
    @property
    def running(self) -> bool: ...

def validate_config(config: _Config) -> None: ...

@final
class Bench:
    """One load-generation run on Rust threads: start(), poll progress(), wait()."""

    def __new__(cls, options: str | dict[str, Any]) -> Bench: ...
    def start(self) -> None: ...
    def progress(self) -> tuple[int, int, int, bool]: ...
    def cancel(self) -> None: ...
    def wait(self, timeout: float | None = None) -> dict[str, Any] | None: ...
    @property
    def planned_seconds(self) -> float | None: ...
    @property
    def planned_requests(self) -> int | None: ...

@final
class BenchBackend:
    """A fast backend for benchmarks: fixed HTTP answers, a TCP sink, a TCP echo."""

    def __new__(
        cls,
        *,
        http: str | None = None,
        tcp_sink: str | None = None,
        tcp_echo: str | None = None,
        body: str | None = None,
        threads: int = 1,
    ) -> BenchBackend: ...
    @property
    def addresses(self) -> dict[str, str]: ...
    def stop(self) -> None: ...
