"""Type stubs for the Rust extension (hand-written; checked by mypy.stubtest)."""

from collections.abc import Sequence
from typing import Any, Final, final

from meshctl.dataplane_config import (
    AuthorizationConfig,
    AuthorizationDecision,
    DataPlaneConfig,
    MatchConfig,
    RouteChoice,
)

__all__ = [
    "PROXY_OWNED_HEADERS",
    "Bench",
    "BenchBackend",
    "BindError",
    "ConfigError",
    "DataPlane",
    "Tap",
    "__version__",
    "authorize",
    "certificates_der",
    "key_and_csr",
    "leaf_certificate",
    "match_route",
    "public_key_info",
    "regex_error",
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
    def effective_config(self) -> dict[str, Any]: ...
    def addresses(self) -> dict[str, str]: ...
    @property
    def running(self) -> bool: ...
    def telemetry(self) -> dict[str, Any]: ...
    def metrics(self, *, openmetrics: bool = False) -> str: ...
    def tap(
        self,
        *,
        method: str | None = None,
        path_prefix: str | None = None,
        status: int | None = None,
        authority: str | None = None,
        max_queue: int = 1000,
    ) -> Tap: ...
    def reopen_logs(self) -> None: ...

@final
class Tap:
    """A live stream of request metadata from one data plane; bounded, closed when dropped."""

    def poll(self, timeout: float = 1.0, max_events: int = 100) -> list[dict[str, Any]]: ...
    def close(self) -> None: ...
    @property
    def dropped(self) -> int: ...

def validate_config(config: _Config) -> None: ...

# === the data plane's decisions, for explain and the control plane's checks ===

#: Headers the proxy owns on every hop; route header edits may not touch them.
PROXY_OWNED_HEADERS: Final[list[str]]

def match_route(
    matches: Sequence[MatchConfig | None],
    *,
    method: str,
    path: str,
    host: str | None = None,
    headers: Sequence[tuple[str, str]] | None = None,
) -> RouteChoice: ...
def authorize(
    block: AuthorizationConfig,
    *,
    peer: str | None,
    method: str | None = None,
    path: str | None = None,
) -> AuthorizationDecision: ...
def regex_error(pattern: str) -> str | None: ...
def key_and_csr(spiffe_id: str) -> tuple[str, str]: ...
def leaf_certificate(chain_pem: str) -> tuple[str | None, int, int, str]: ...
def certificates_der(pem: str) -> list[bytes]: ...
def public_key_info(der: bytes) -> bytes: ...

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
