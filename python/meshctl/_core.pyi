"""Type stubs for the Rust extension (hand-written; checked by mypy.stubtest)."""

from typing import Any, Final, final

__all__ = ["BindError", "ConfigError", "DataPlane", "__version__", "validate_config"]

__version__: Final[str]

class ConfigError(ValueError):
    """The config is invalid; ``errors`` lists every problem as (path, message)."""

    errors: list[tuple[str, str]]

class BindError(OSError):
    """A listener could not bind its address."""

@final
class DataPlane:
    """The data plane: listeners, routes and clusters served from Rust threads."""

    def __new__(cls, config: str | dict[str, Any], *, workers: int | None = None) -> DataPlane: ...
    def start(self) -> None: ...
    def update(self, config: str | dict[str, Any]) -> int: ...
    def stop(self, grace_seconds: float = 10.0) -> None: ...
    def stats(self) -> dict[str, Any]: ...
    def config(self) -> dict[str, Any]: ...
    def addresses(self) -> dict[str, str]: ...
    @property
    def running(self) -> bool: ...

def validate_config(config: str | dict[str, Any]) -> None: ...
