"""The compose file ``meshctl up -f`` reads: an embedded control plane's
settings, the apps to run (each under ``meshctl run``), and mesh resources.

```yaml
controlPlane: {authzDefault: allow, outboundPolicy: ALLOW_ANY, port: 15010}   # all optional
apps:
  pricing-v1:
    service: pricing                 # default: the app's name
    command: "{python} -m meshctl.demo.backends --name pricing-v1 --port {port}"
    labels: {version: v1}
  catalog:
    command: [my-catalog, --listen, "127.0.0.1:{port}"]
    upstreams: [pricing, {inventory: 7002}]   # local ports chosen unless given
resources: [...]                     # documents as `meshctl apply -f` takes them
```

In a command, ``{port}`` is the app's port and ``{python}`` the interpreter
running meshctl (so a shipped file runs its Python apps the same way from any
virtualenv); nothing else is substituted and no shell runs it. Bad files are
refused whole with one line per problem, each naming its field path
(``apps.catalog.upstreams[1]: ...``).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from meshctl.client import field_path

Name = Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)]
Port = Annotated[int, Field(ge=1, le=65535)]


class SpecError(ValueError):
    """A compose file that cannot be used; `problems` are "field.path: message" lines."""

    def __init__(self, source: str, problems: list[str]):
        super().__init__("\n".join(f"{source}: {p}" for p in problems))
        self.source = source
        self.problems = problems


class _Strict(BaseModel):
    # Fields camelCase in the file (httpProxy), as in the mesh's resources.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ControlPlaneSpec(_Strict):
    """Settings of the embedded control plane (`meshctl control-plane` flags)."""

    outbound_policy: Literal["ALLOW_ANY", "REGISTRY_ONLY"] | None = None
    authz_default: Literal["allow", "deny"] | None = None
    port: Port | None = None


class AppSpec(_Strict):
    """One app: its command, run under `meshctl run` as an instance of `service`."""

    service: Name | None = None
    namespace: Name = "default"
    command: list[str] = Field(min_length=1)
    port: Port | None = None
    protocol: Literal["http", "http2", "grpc", "tcp"] = "http"
    replicas: int = Field(1, ge=1, le=64)
    #: Service references ("pricing", "other-ns/pricing") -> a fixed local port, or None: chosen.
    upstreams: dict[str, Port | None] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    #: The Service's health check (its `healthCheck`, whose schema is the control plane's); passed through.
    health: dict[str, Any] | None = None
    http_proxy: bool = True

    @field_validator("command", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return shlex.split(value) if isinstance(value, str) else value

    @field_validator("upstreams", mode="before")
    @classmethod
    def _upstreams(cls, value: Any) -> Any:
        """A list of names or one-key {name: port} maps, as the file writes them, into one map."""
        if not isinstance(value, list):
            raise ValueError("expected a list of service names or {name: port} entries")
        out: dict[str, Any] = {}
        for i, entry in enumerate(value):
            if isinstance(entry, dict) and len(entry) == 1:
                name, port = next(iter(entry.items()))
            elif isinstance(entry, str):
                name, port = entry, None
            else:
                raise ValueError(f"[{i}]: expected a service name or {{name: port}}, got {entry!r}")
            if not isinstance(name, str) or not name or name.count("/") > 1:
                raise ValueError(f"[{i}]: expected SERVICE or NAMESPACE/SERVICE, got {name!r}")
            if name in out:
                raise ValueError(f"[{i}]: {name!r} is listed twice")
            out[name] = port
        return out

    @model_validator(mode="after")
    def _fixed_ports(self) -> AppSpec:
        fixed = self.port is not None or any(p is not None for p in self.upstreams.values())
        if self.replicas > 1 and fixed:
            raise ValueError("replicas > 1 need ports chosen by up: leave out port and upstream ports")
        return self


class ComposeSpec(_Strict):
    control_plane: ControlPlaneSpec = Field(default_factory=lambda: ControlPlaneSpec())
    apps: dict[Name, AppSpec] = Field(min_length=1)
    resources: list[dict[str, Any]] = Field(default_factory=list)

    def service_of(self, app: str) -> tuple[str, str]:
        """(namespace, service) of app `app`."""
        spec = self.apps[app]
        return spec.namespace, spec.service or app

    def provider(self, app: str, upstream: str) -> list[str]:
        """The apps serving `upstream` as app `app` names it ("svc" in its namespace, or "ns/svc")."""
        ns, _, name = upstream.rpartition("/")
        key = (ns or self.apps[app].namespace, name)
        return [a for a in self.apps if self.service_of(a) == key]

    @model_validator(mode="after")
    def _known_upstreams(self) -> ComposeSpec:
        defined = {_resource_key(r) for r in self.resources}
        for app, spec in self.apps.items():
            for i, upstream in enumerate(spec.upstreams):
                ns, _, name = upstream.rpartition("/")
                key = (ns or spec.namespace, name)
                if not self.provider(app, upstream) and key not in defined:
                    raise ValueError(
                        f"apps.{app}.upstreams[{i}]: no app serves {upstream!r} and no resource defines it"
                    )
        return self


def _resource_key(doc: dict[str, Any]) -> tuple[str, str] | None:
    """(namespace, name) of a Service or ExternalService document, else None."""
    if doc.get("kind") not in ("Service", "ExternalService"):
        return None
    meta = doc.get("metadata") or {}
    return str(meta.get("namespace") or "default"), str(meta.get("name"))


def service_documents(spec: ComposeSpec) -> list[dict[str, Any]]:
    """A Service for every app's service the resources leave undefined (one per service, from its
    first app: port 80 with the app's protocol, and its `health` as the Service's `healthCheck`)."""
    defined = {_resource_key(r) for r in spec.resources if r.get("kind") == "Service"}
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for app, a in spec.apps.items():
        key = spec.service_of(app)
        if key in defined or key in out:
            continue
        body: dict[str, Any] = {"ports": [{"port": 80, "protocol": a.protocol}]}
        if a.health is not None:
            body["healthCheck"] = a.health
        out[key] = {"kind": "Service", "metadata": {"name": key[1], "namespace": key[0]}, "spec": body}
    return list(out.values())


def parse(data: Any, source: str = "<compose>") -> ComposeSpec:
    """A parsed YAML/JSON document as a ComposeSpec, or SpecError naming every bad field."""
    try:
        return ComposeSpec.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = list(err["loc"])
            msg = str(err["msg"]).removeprefix("Value error, ")
            if loc and loc[-1] == "[key]":  # a bad app name: point at the app
                loc, msg = loc[:-1], "an app name is lowercase letters, digits and '-' (a DNS label)"
            path = field_path(loc)
            # A model-level check names its own field (`apps.x.upstreams[1]: ...`).
            if msg.startswith("apps.") or not path:
                problems.append(msg)
            elif msg.startswith("["):
                problems.append(f"{path}{msg}")
            else:
                problems.append(f"{path}: {msg}")
        raise SpecError(source, problems) from None


def load(path: Path) -> ComposeSpec:
    """Read and check the compose file at `path`."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise SpecError(str(path), [f"cannot read it: {e.strerror or e}"]) from None
    except yaml.YAMLError as e:
        raise SpecError(str(path), [f"not YAML: {e}"]) from None
    if not isinstance(data, dict):
        raise SpecError(str(path), ["expected a mapping with apps: (and optionally controlPlane:, resources:)"])
    return parse(data, str(path))
