"""The environment ``meshctl run`` gives its app, made from the sidecar's
ready line (``meshctl.sidecar.readiness``) and the ``--upstream`` flags.

- ``MESHCTL_UPSTREAM_<NAME>``: one per outbound listener (``outbound/NS/SVC``
  or, in a file, ``outbound/SVC``): ``http://127.0.0.1:PORT``, or
  ``tcp://...`` for a tcp listener. NAME is the service, upper-cased, every
  other character than a letter or digit made ``_``; a service of another
  namespace than the app's keeps it (``other/billing`` -> ``OTHER_BILLING``).
  An ``--upstream`` flag also gives the name as typed (``default/pricing`` ->
  ``DEFAULT_PRICING`` besides ``PRICING``), and a port even when no listener
  of the ready line has it (the file may not name it ``outbound/...``).
- ``HTTP_PROXY``/``http_proxy``: the ``http-proxy`` listener (Host routing to
  any mesh service), when there is one; ``NO_PROXY``/``no_proxy`` keep
  loopback calls (the upstream ports themselves) off it.
- ``MESHCTL_SERVICE`` and ``MESHCTL_NAMESPACE``: who the app is.

``MESHCTL_TOKEN`` is not passed on: the join token is the sidecar's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from meshctl.sidecar.readiness import Ready

NO_PROXY = "localhost,127.0.0.1,::1"
#: What the app does not inherit from `meshctl run`'s environment.
WITHHELD = ("MESHCTL_TOKEN",)


def env_name(service: str) -> str:
    """`MESHCTL_UPSTREAM_` + this: "pricing" -> PRICING, "other/billing-v2" -> OTHER_BILLING_V2."""
    return re.sub(r"[^A-Za-z0-9]", "_", service).upper()


def _loopback(address: str) -> str:
    """A bound address as the app dials it (a wildcard bind is reached on loopback)."""
    host, _, port = address.rpartition(":")
    host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]"}.get(host, host)
    return f"{host}:{port}"


def _url(protocol: str, address: str) -> str:
    return f"{'tcp' if protocol == 'tcp' else 'http'}://{_loopback(address)}"


def upstream_urls(ready: Ready, upstreams: Mapping[str, int], namespace: str) -> dict[str, str]:
    """NAME -> URL of every upstream the app may call (see the module's docstring)."""
    out: dict[str, str] = {}
    by_port: dict[str, str] = {}
    for name, address in sorted(ready.listeners.items()):
        url = _url(ready.protocols.get(name, "http"), address)
        by_port[address.rpartition(":")[2]] = url
        if not name.startswith("outbound/"):
            continue
        rest = name.removeprefix("outbound/")
        ns, _, service = rest.rpartition("/")
        out[env_name(service if ns in ("", namespace) else rest)] = url
    for service, port in upstreams.items():
        out.setdefault(env_name(service), by_port.get(str(port), f"http://127.0.0.1:{port}"))
    return out


def app_environment(
    base: Mapping[str, str],
    ready: Ready,
    *,
    upstreams: Mapping[str, int],
    service: str | None,
    namespace: str,
) -> dict[str, str]:
    """`base` (run's own environment) with what the app learns of its sidecar."""
    env = {k: v for k, v in base.items() if k not in WITHHELD and not k.startswith("MESHCTL_UPSTREAM_")}
    for name, url in upstream_urls(ready, upstreams, namespace).items():
        env[f"MESHCTL_UPSTREAM_{name}"] = url
    if (proxy := ready.listeners.get("http-proxy")) is not None:
        env["HTTP_PROXY"] = env["http_proxy"] = f"http://{_loopback(proxy)}"
        env["NO_PROXY"] = env["no_proxy"] = NO_PROXY
    if service:
        env["MESHCTL_SERVICE"] = service
    env["MESHCTL_NAMESPACE"] = namespace
    return env
