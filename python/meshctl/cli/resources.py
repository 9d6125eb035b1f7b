"""``meshctl apply``, ``get`` and ``delete``: mesh resources as YAML documents
(``kind``, ``metadata: {name, namespace}``, ``spec``), kubectl style.

``apply -f`` sends every document of every file in one request, which the
control plane applies all or nothing as one revision. ``get -o yaml`` prints
documents that ``apply -f`` takes back unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

import typer

from meshctl.cli import api, options
from meshctl.cli.api import Client, add_row, age, fail, qualified, reported
from meshctl.cli.documents import Origin
from meshctl.cli.documents import read_documents as read_documents  # diff -f reads them here too
from meshctl.cli.message import Message, with_message
from meshctl.cli.options import Format as Output
from meshctl.client import ApiError
from meshctl.control import kinds as registry

# === kinds ===


@dataclass(frozen=True)
class Kind:
    name: str  # as documents spell it: "HTTPRoute"
    plural: str  # the API's collection: "httproutes"
    aliases: tuple[str, ...]
    #: Table columns after NAMESPACE and NAME, and how to fill them from an API object.
    columns: tuple[str, ...] = ()
    cells: Callable[[dict[str, Any]], list[str]] | None = None

    @property
    def appliable(self) -> bool:
        return self.name in APPLIABLE


def _service(svc: dict[str, Any]) -> list[str]:
    return [", ".join(f"{p['name']}:{p['port']}/{p['protocol']}" for p in svc.get("ports", [])), svc.get("mtls", "")]


def _subset(subset: dict[str, str]) -> str:
    return "{" + ",".join(f"{k}={v}" for k, v in sorted(subset.items())) + "}" if subset else ""


def backends(refs: list[dict[str, Any]], home: str) -> str:
    """`catalog{version=v1} 90%, catalog{version=v2} 10%`; a lone backend without its share."""
    total = sum(int(b.get("weight", 1)) for b in refs) or 1
    out = []
    for b in refs:
        name = qualified(b.get("namespace"), b["name"], home) + _subset(b.get("subset") or {})
        if b.get("port"):
            name += f":{b['port']}"
        out.append(name if len(refs) == 1 else f"{name} {100 * int(b.get('weight', 1)) / total:.3g}%")
    return ", ".join(out)


def _match(m: dict[str, Any]) -> str:
    parts = []
    if m.get("method"):
        parts.append(m["method"])
    path = m.get("path")
    if path:
        value = path.get("value", "/")
        kind = path.get("type", "PathPrefix")
        parts.append(value if kind == "Exact" else f"~{value}" if kind == "RegularExpression" else f"{value}*")
    parts += [
        f"{h['name']}{'~' if h.get('type') == 'RegularExpression' else '='}{h['value']}" for h in m.get("headers", [])
    ]
    parts += [f"?{q['name']}={q['value']}" for q in m.get("queryParams", [])]
    return " ".join(parts) or "*"


def _rules(route: dict[str, Any]) -> list[str]:
    lines = []
    for rule in route["spec"]["rules"]:
        matches = " | ".join(_match(m) for m in rule.get("matches", [{}]))
        filters = [f["type"] for f in rule.get("filters", [])]
        target = (
            "redirect" if "RequestRedirect" in filters else backends(rule.get("backendRefs", []), route["namespace"])
        )
        extra = [f for f in filters if f != "RequestRedirect"]
        lines.append(f"{matches} -> {target}" + (f" [{', '.join(extra)}]" if extra else ""))
    return lines


def _parent(p: dict[str, Any], home: str) -> str:
    name = qualified(p.get("namespace"), p["name"], home)
    if p.get("kind") != "Gateway":
        return name
    return f"gateway/{name}" + (f"#{p['sectionName']}" if p.get("sectionName") else "")


def _parents(route: dict[str, Any]) -> str:
    parents = ", ".join(_parent(p, route["namespace"]) for p in route["spec"]["parentRefs"])
    hostnames = route["spec"].get("hostnames")
    return parents + (f" ({', '.join(hostnames)})" if hostnames else "")


def _http_route(route: dict[str, Any]) -> list[str]:
    return [_parents(route), "\n".join(_rules(route))]


def _tcp_route(route: dict[str, Any]) -> list[str]:
    return [_parents(route), backends(route["spec"]["rules"][0]["backendRefs"], route["namespace"])]


def _policy(p: dict[str, Any]) -> list[str]:
    spec = p["spec"]
    lb = spec.get("loadBalancer") or {}
    hash_on = lb.get("hashOn") or {}
    how = lb.get("type", "RoundRobin") + (
        f" (header {hash_on['header']})" if hash_on.get("header") else " (source IP)" if hash_on.get("sourceIp") else ""
    )
    timeout = spec.get("connectTimeoutMs")
    target = spec["targetRef"]
    return [
        qualified(target.get("namespace"), target["name"], p["namespace"]),
        how,
        spec.get("protocol") or "auto",
        f"{timeout}ms" if timeout else "",
    ]


def _gateway(g: dict[str, Any]) -> list[str]:
    """`https :8443 HTTPS shop.example.com [shop]`, one line per listener."""
    lines = []
    for item in g["spec"]["listeners"]:
        refs = ((item.get("tls") or {}).get("certificateRefs")) or []
        cert = f" [{', '.join(r['name'] for r in refs)}]" if refs else ""
        lines.append(f"{item['name']} :{item['port']} {item['protocol']} {item.get('hostname') or '*'}{cert}")
    return ["\n".join(lines)]


def _source(s: dict[str, Any]) -> str:
    parts = [f"{f}={','.join(s[f])}" for f in ("principals", "namespaces", "services") if s.get(f)]
    return " ".join(parts)


def _operation(o: dict[str, Any]) -> str:
    return " ".join([*o.get("methods", []), *o.get("paths", [])])


def _authz_rule(rule: dict[str, Any]) -> str:
    sources = " | ".join(_source(f["source"]) for f in rule.get("from", [])) or "anyone"
    operations = " | ".join(_operation(t["operation"]) for t in rule.get("to", [])) or "anything"
    return f"{sources} -> {operations}"


def _authz_policy(p: dict[str, Any]) -> list[str]:
    spec = p["spec"]
    target = spec["targetRef"]
    rules = [_authz_rule(r) for r in spec.get("rules", [])]
    return [
        qualified(target.get("namespace"), target["name"], p["namespace"]),
        spec.get("action", "ALLOW"),
        "\n".join(rules) if rules else "(none: matches nothing)",
    ]


def _bucket(limit: dict[str, Any] | None) -> str:
    if not limit:
        return ""
    burst = f" (burst {limit['burst']})" if limit.get("burst") else ""
    return f"{limit['requestsPerSecond']:g}/s{burst}"


def _rate_limit_policy(p: dict[str, Any]) -> list[str]:
    spec = p["spec"]
    target = spec["targetRef"]
    overrides = [
        f"{', '.join(qualified(c.get('namespace'), c['name'], p['namespace']) for c in o['clientRefs'])}: {_bucket(o)}"
        for o in spec.get("overrides") or []
    ]
    return [
        qualified(target.get("namespace"), target["name"], p["namespace"]),
        _bucket(spec.get("total")),
        _bucket(spec.get("identity")),
        "\n".join(overrides),
    ]


def _telemetry(t: dict[str, Any]) -> list[str]:
    spec = t["spec"]
    targets = [qualified(r.get("namespace"), r["name"], t["namespace"]) for r in spec.get("targetRefs") or []]
    tracing = spec.get("tracing") or {}
    sampling = tracing.get("samplingPercent")
    log = spec.get("accessLog")
    return [
        ", ".join(targets) or "(every service)",
        "" if sampling is None else f"{sampling:g}%",
        tracing.get("collector") or "",
        "" if log is None else "off" if log.get("disabled") else f"{log.get('format', 'json')} {log.get('path', '-')}",
    ]


def _external_service(e: dict[str, Any]) -> list[str]:
    spec = e["spec"]
    ports = [
        f"{p['port']}/{p['protocol']}" + (f"->{p['targetPort']}" if p.get("targetPort") else "") for p in spec["ports"]
    ]
    allowed = spec.get("allowedServices")
    return [
        ", ".join(spec["hosts"]),
        ", ".join(ports) + (" (TLS origination)" if spec.get("tls") else ""),
        "(every service)" if allowed is None else ", ".join(allowed) or "(none)",
    ]


#: How `get` shows a resource kind in a table: the columns after NAMESPACE and NAME, and their cells.
_TABLES: dict[str, tuple[tuple[str, ...], Callable[[dict[str, Any]], list[str]]]] = {
    "Service": (("PORTS", "MTLS"), _service),
    "Gateway": (("LISTENERS",), _gateway),
    "HTTPRoute": (("PARENTS", "RULES"), _http_route),
    "TCPRoute": (("PARENTS", "BACKENDS"), _tcp_route),
    "TrafficPolicy": (("TARGET", "LOAD BALANCER", "PROTOCOL", "CONNECT TIMEOUT"), _policy),
    "AuthorizationPolicy": (("TARGET", "ACTION", "RULES"), _authz_policy),
    "RateLimitPolicy": (("TARGET", "TOTAL", "PER IDENTITY", "OVERRIDES"), _rate_limit_policy),
    "Telemetry": (("TARGETS", "SAMPLING", "COLLECTOR", "ACCESS LOG"), _telemetry),
    "ExternalService": (("HOSTS", "PORTS", "ALLOWED SERVICES"), _external_service),
}
KINDS = (
    # The control plane's registry of resource kinds (names, aliases and API paths only: no models).
    *(Kind(e.name, e.plural, e.aliases, *_TABLES.get(e.name, ((), None))) for e in registry.REGISTRY),
    # Not resource kinds, but shown by `get` as well.
    Kind("Endpoint", "endpoints", ("endpoint", "endpoints", "ep")),
    Kind("Sidecar", "sidecars", ("sidecar", "sidecars")),
)
APPLIABLE = registry.NAMES
_BY_ALIAS = {alias: k for k in KINDS for alias in (*k.aliases, k.name.lower())}


def kind_of(text: str, *, appliable: bool = False) -> Kind:
    kind = _BY_ALIAS.get(text.lower())
    if kind is None or (appliable and not kind.appliable):
        choices = [k for k in KINDS if k.appliable or not appliable]
        names = ", ".join(k.plural + (" (svc)" if k.name == "Service" else "") for k in choices)
        fail(f"unknown kind {text!r}; one of: {names}")
    return kind


def kind_and_name(kind: str, name: str | None) -> tuple[str, str | None]:
    """`KIND NAME`, or the `kind/name` and `kind/namespace/name` that apply and delete print."""
    if name is None and "/" in kind:
        kind, _, rest = kind.partition("/")
        return kind, rest
    return kind, name


def split_name(name: str, namespace: str | None) -> tuple[str, str]:
    """(namespace, name) from `name` or `namespace/name`, and -n."""
    ns, sep, short = name.rpartition("/")
    if not sep:
        return namespace or "default", name
    if namespace and namespace != ns:
        fail(f"{name!r} is in namespace {ns!r}, but -n says {namespace!r}")
    if not ns or not short or "/" in ns:
        fail(f"expected NAME or NAMESPACE/NAME, got {name!r}")
    return ns, short


def _path(kind: Kind, namespace: str, name: str) -> str:
    return f"/api/v1/{kind.plural}/{quote(namespace, safe='')}/{quote(name, safe='')}"


def _prune(value: Any) -> Any:
    """Drop nulls: the control plane stores specs without them, so this is exactly what is stored."""
    if isinstance(value, dict):
        return {k: _prune(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def document(kind: Kind, item: dict[str, Any]) -> dict[str, Any]:
    """An API object as the document `apply -f` takes."""
    if kind.name == "Service":
        spec = {"ports": item["ports"], "mtls": item["mtls"], "healthCheck": item.get("health_check")}
    else:
        spec = item["spec"]
    # resourceVersion too: a read-modify-write (`get -o yaml`, edit, `apply -f`) is refused (409)
    # when the resource changed in between, instead of undoing that change.
    meta = {"name": item["name"], "namespace": item["namespace"], "resourceVersion": item["resource_version"]}
    # Only when there are some: a document without them applies none, so this round-trips.
    meta |= {field: item[field] for field in ("labels", "annotations") if item.get(field)}
    return {"kind": kind.name, "metadata": meta, "spec": _prune(spec)}


def ref(kind: str, name: str) -> str:
    """`httproute/default/canary`, as apply and delete print it."""
    return f"{kind.lower()}/{name}"


# === reading documents ===


def _locator(docs: list[dict[str, Any]], origins: list[Origin]) -> api.Locate:
    def locate(loc: list[Any]) -> str | None:
        if len(loc) > 2 and loc[:2] == ["body", "documents"] and isinstance(loc[2], int) and loc[2] < len(docs):
            doc = docs[loc[2]]
            meta = doc.get("metadata")
            meta = meta if isinstance(meta, dict) else {}
            what = f"{doc.get('kind', '?')} {meta.get('namespace', 'default')}/{meta.get('name', '?')}"
            return f"{what}, {origins[loc[2]]}"
        return None

    return locate


# === verbs ===

Files = Annotated[
    list[str] | None,
    typer.Option("--filename", "-f", help="YAML or JSON file, directory, or - for stdin; repeatable."),
]
Namespace = Annotated[
    str | None, typer.Option("--namespace", "-n", help="Namespace.", show_default="every namespace, for lists")
]


def apply(
    filename: Files = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and report; change nothing.")] = False,
    wait: Annotated[
        bool,
        typer.Option("--wait", help="Return once every live sidecar ACKed the new config; exit 1 if one NACKs it."),
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0, help="Seconds --wait waits before exit 1, naming the sidecars behind.")
    ] = 60.0,
    message: Message = None,
    server: options.Server = options.DEFAULT_SERVER,
    token: options.Token = None,
    token_file: options.TokenFile = None,
) -> None:
    """Create or update every resource in the files, all or nothing, as one revision."""
    if not filename:
        fail("give the documents to apply with -f FILE (- for stdin)")
    if wait and dry_run:
        fail("--wait has nothing to wait for with --dry-run")
    docs, origins = read_documents(filename)
    if not docs:
        fail(f"no documents in {', '.join(filename)}")
    client = api.connect(server, token, token_file)
    with reported(client, _locator(docs, origins)):
        results = client.post(
            with_message("/api/v1/apply", message), {"documents": docs, "dry_run": dry_run}, timeout=60
        )
    suffix = " (dry run)" if dry_run else ""
    for r in results:
        typer.echo(f"{ref(r['kind'], r['name'])} {r['action']}{suffix}")
    if wait:  # for the generation this apply made, or a newer one (see cli.sync for which sidecars)
        from meshctl.cli import sync

        with reported(client):
            generation = client.get("/api/v1/mesh")["generation"]
        sync.wait_for_acks(client, generation, timeout)


def get(
    kind: Annotated[
        str,
        typer.Argument(
            help="services (svc), gateways (gw), httproutes, tcproutes, trafficpolicies, authorizationpolicies"
            " (authz), ratelimitpolicies (ratelimit), telemetries, endpoints, sidecars."
        ),
    ],
    name: Annotated[
        str | None, typer.Argument(help="NAME or NAMESPACE/NAME (for endpoints and sidecars: the service).")
    ] = None,
    namespace: Namespace = None,
    all_namespaces: options.AllNamespaces = False,
    selector: options.Selector = None,
    output: options.DocumentOutput = Output.table,
    server: options.Server = options.DEFAULT_SERVER,
    token: options.Token = None,
    token_file: options.TokenFile = None,
) -> None:
    """Show resources: one by NAME, or all of a kind (in every namespace unless -n)."""
    from meshctl.cli import select

    kind, name = kind_and_name(kind, name)
    k = kind_of(kind)
    if all_namespaces and (namespace or name):
        fail("-A lists every namespace: give no -n and no NAME with it")
    if k.name == "Endpoint" and name is None:
        fail("endpoints belong to a service: meshctl get endpoints SERVICE")
    target = split_name(name, namespace) if name else None
    client = api.connect_reading(server, token, token_file)
    with reported(client):
        if k.name == "Sidecar":
            _get_sidecars(client, target, namespace, output, selector)
            return
        if k.name == "Endpoint":
            assert target is not None
            _get_endpoints(client, target, output, selector)
            return
        if target:
            items = [client.get(_path(k, *target))]
        else:
            items = client.get(f"/api/v1/{k.plural}" + (f"?namespace={quote(namespace)}" if namespace else ""))
    items = select.filtered(items, selector)
    if output in (Output.table, Output.wide):
        if not items:
            typer.echo(f"no {k.plural}" + (f" in namespace {namespace}" if namespace else ""), err=True)
            return
        wide = ("LABELS", "CREATED") if output is Output.wide else ()
        t = api.table("NAMESPACE", "NAME", *k.columns, "VERSION", "AGE", *wide)
        for item in items:
            cells = k.cells(item) if k.cells else []
            more = (_labels(select.labels_of(item)), api.local_time(item["created_at"])) if wide else ()
            add_row(
                t, item["namespace"], item["name"], *cells, item["resource_version"], age(item["created_at"]), *more
            )
        api.console().print(t)
        return
    docs = [document(k, item) for item in items]
    _print_documents(docs if target is None else docs[0], output)


def _print_documents(value: dict[str, Any] | list[dict[str, Any]], output: Output) -> None:
    import yaml

    if output is Output.json:
        typer.echo(json.dumps(value, indent=2))
    elif isinstance(value, list):
        if value:
            typer.echo(yaml.safe_dump_all(value, sort_keys=False, explicit_start=True), nl=False)
    else:
        typer.echo(yaml.safe_dump(value, sort_keys=False), nl=False)


def _labels(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _health(health: str | None) -> Any:
    from rich.text import Text

    styles = {"healthy": "green", "unhealthy": "red", "unknown": "yellow"}
    return Text(health or "-", style=styles.get(health or "", ""))


def _get_endpoints(client: Client, service: tuple[str, str], output: Output, selector: str | None) -> None:
    from meshctl.cli import select

    items = select.filtered(client.get(_path(kind_of("services"), *service) + "/endpoints"), selector)
    if output not in (Output.table, Output.wide):
        _print_documents(items, output)
        return
    if not items:
        typer.echo(f"no live endpoints of service {service[0]}/{service[1]}", err=True)
        return
    # HEALTH: its app's, as its sidecar probes it ("-": no check); only "-" and healthy take calls.
    t = api.table("ID", "ADDRESS", "HEALTH", "WEIGHT", "LABELS", "EXPIRES")
    for e in items:
        address, health = f"{e['address']}:{e['port']}", _health(e.get("health"))
        add_row(t, e["id"], address, health, e["weight"], _labels(e["labels"]), api.until(e["expires_at"]))
    api.console().print(t)


def _get_sidecars(
    client: Client, target: tuple[str, str] | None, namespace: str | None, output: Output, selector: str | None
) -> None:
    from meshctl.cli import select
    from meshctl.cli.status import sidecar_table

    ns = target[0] if target else namespace
    items = select.filtered(client.get("/api/v1/sidecars" + (f"?namespace={quote(ns)}" if ns else "")), selector)
    if target:
        items = [s for s in items if s["service"] == target[1]]
    if output not in (Output.table, Output.wide):
        _print_documents(items, output)
    elif not items:
        typer.echo("no sidecars registered" + (f" for {target[0]}/{target[1]}" if target else ""), err=True)
    else:
        api.console().print(sidecar_table(items, wide=output is Output.wide))


def delete(
    kind: Annotated[
        str | None,
        typer.Argument(
            help="services (svc), gateways (gw), httproutes, tcproutes, trafficpolicies, authorizationpolicies (authz),"
            " ratelimitpolicies (ratelimit), telemetries."
        ),
    ] = None,
    name: Annotated[str | None, typer.Argument(help="NAME or NAMESPACE/NAME.")] = None,
    filename: Files = None,
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", help="Namespace.", show_default="default")
    ] = None,
    message: Message = None,
    server: options.Server = options.DEFAULT_SERVER,
    token: options.Token = None,
    token_file: options.TokenFile = None,
) -> None:
    """Delete one resource (KIND NAME), or every resource in the files (-f); missing ones are reported and skipped."""
    if filename and (kind or name):
        fail("give KIND NAME or -f FILE, not both")
    if kind:
        kind, name = kind_and_name(kind, name)
    if filename:
        targets = _targets(filename)
        if not targets:
            fail(f"no documents in {', '.join(filename)}")
    elif kind and name:
        targets = [(kind_of(kind, appliable=True), *split_name(name, namespace))]
    else:
        fail("give KIND NAME, or -f FILE")
    client = api.connect(server, token, token_file)
    failed = False
    with reported(client):
        for k, ns, short in targets:
            what = ref(k.name, f"{ns}/{short}")
            try:
                client.delete(with_message(_path(k, ns, short), message))
            except ApiError as e:
                if e.status == 404 and filename:
                    typer.echo(f"{what} not found, skipped")
                    continue
                if e.status not in (404, 409, 422):
                    raise
                api.report(e, client)
                failed = True
                continue
            typer.echo(f"{what} deleted")
    if failed:
        raise typer.Exit(1)


def _targets(paths: list[str]) -> list[tuple[Kind, str, str]]:
    """What the documents name, routes and policies before the gateways and services they use."""
    docs, origins = read_documents(paths)
    targets = []
    for doc, origin in zip(docs, origins, strict=True):
        meta = doc.get("metadata")
        if not isinstance(doc.get("kind"), str) or not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
            fail(f"{origin}: a document needs kind and metadata.name")
        k = _BY_ALIAS.get(doc["kind"].lower())
        if k is None or not k.appliable:
            fail(f"{origin}: unknown kind {doc['kind']!r}; one of: {', '.join(APPLIABLE)}")
        targets.append((k, str(meta.get("namespace") or "default"), meta["name"]))
    return sorted(targets, key=lambda t: -APPLIABLE.index(t[0].name))
