"""What a resource kind is: its models, what revisions record of it, what it
references, and how the compiler reads it. A kind module makes one ``Kind``
(subclassed where the kind differs) as ``KIND``; crud, the routers, history and
push ask it instead of testing which kind they hold."""

from __future__ import annotations

import types
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, TypeVar, cast

import orjson
from pydantic import BaseModel
from sqlalchemy import UniqueConstraint
from sqlmodel import Session, SQLModel

from meshctl.control.kinds import BY_NAME, Entry
from meshctl.control.kinds import labels as meta
from meshctl.control.kinds.common import (
    BODY,
    Labelled,
    NamespacedName,
    Relabelled,
    RouteView,
    SpecRow,
    VersionInfo,
    key,
)

#: Where something is in a request body or a spec, FastAPI style: ["rules", 0, "backendRefs", 1].
Loc = list[str | int]


#: Validated specs by (kind, their JSON): the same content always parses to the same spec (specs are
#: never changed after parsing). Cleared when it grows past PARSED_MAX (a mesh of that many rows).
_PARSED: dict[tuple[str, bytes], Any] = {}
PARSED_MAX = 100_000
T = TypeVar("T")
#: Set by the row cache (control/rowcache.py) around `Kind.load`: (what, id(row)) -> (row, what was
#: made of it: its spec, its route view), kept from one load to the next for the rows it still holds.
ROW_MEMO: ContextVar[dict[tuple[str, int], tuple[Any, Any]] | None] = ContextVar("ROW_MEMO", default=None)


def per_row(row: Any, what: str, make: Callable[[Any], T]) -> T:
    """`make(row)`; within a load through the row cache (`ROW_MEMO` set), once per row object and
    `what`: those rows are read once and never written, and at 10,000 routes remaking everything
    of every unchanged row was most of a load."""
    memo = ROW_MEMO.get()
    if memo is None:
        return make(row)
    known = memo.get((what, id(row)))
    if known is not None and known[0] is row:
        return cast(T, known[1])
    value = make(row)
    memo[(what, id(row))] = (row, value)
    return value


@dataclass(frozen=True)
class Ref:
    """One reference a spec makes to another resource."""

    #: Where, within the spec (for a reference made by the resource's name: ["metadata", "name"]).
    loc: Loc
    #: The kind referenced: "Service", "Gateway".
    kind: str
    namespace: str
    name: str
    #: The part of the target it picks (a Gateway listener's name), when it picks one.
    section: str | None = None
    #: For a reference made by the resource's own name: why it needs the target (errors then
    #: point at the name).
    why: str | None = None

    @property
    def target(self) -> str:
        return f"{self.namespace}/{self.name}"


# === the table family: one helper for every kind stored as {namespace, name, spec} ===


class Family(NamedTuple):
    """A kind's models: the create and update bodies, the table, and what the API returns."""

    create: type[SQLModel]
    update: type[SQLModel]
    table: type[SQLModel]
    public: type[SQLModel]


def _model(
    module: str,
    name: str,
    bases: tuple[type, ...],
    fields: dict[str, Any],
    body: dict[str, Any] | None = None,
    **kwds: Any,
) -> type[SQLModel]:
    """`class <name>(*bases, **kwds)` with these annotated fields, as if written in `module`."""
    namespace = {"__module__": module, "__qualname__": name, "__annotations__": fields, **(body or {})}
    return cast(type[SQLModel], types.new_class(name, bases, kwds, lambda ns: ns.update(namespace)))


def spec_family(name: str, spec: type[BaseModel], *, module: str) -> Family:
    """`<name>Create` {name, namespace, labels, annotations, spec}, `<name>Update` {labels,
    annotations, spec, resource_version}, the table
    `<name>` (one row per namespace/name) and `<name>Public`: the OpenAPI document's names."""
    table = _model(
        module, name, (SpecRow,), {}, {"__table_args__": (UniqueConstraint("namespace", "name"),)}, table=True
    )
    return Family(
        create=_model(module, f"{name}Create", (NamespacedName, Labelled), {"spec": spec}, {"model_config": BODY}),
        update=_model(
            module, f"{name}Update", (Relabelled,), {"spec": spec, "resource_version": int}, {"model_config": BODY}
        ),
        table=table,
        public=_model(module, f"{name}Public", (NamespacedName, VersionInfo), {"spec": spec}),
    )


# === the kind ===


class Kind:
    """A kind stored as its spec, with a generic REST API (/api/v1/<plural>); subclasses say
    what their specs reference and how the compiler reads them."""

    #: Served by the generic spec router (routers/specs.py); Service has its own.
    spec_api: ClassVar[bool] = True
    #: What a Gateway's references may pick by name (sectionName): "listener"; None for none.
    section_noun: ClassVar[str | None] = None
    #: Where those sections are in the spec, for errors about them.
    sections_at: ClassVar[tuple[str, ...]] = ()
    #: At most one resource of this kind may reference a given resource (a TrafficPolicy per service).
    exclusive: ClassVar[bool] = False

    def __init__(self, name: str, spec: type[BaseModel], family: Family, *, refers_to: tuple[str, ...] = ()):
        self.name = name
        #: What `apply` validates a document's spec with.
        self.spec = spec
        self.create, self.update, self.table, self.public = family
        #: The kinds whose resources this kind's specs name (what a delete must check).
        self.refers_to = refers_to

    def __repr__(self) -> str:
        return f"<kind {self.name}>"

    @property
    def entry(self) -> Entry:
        """Its registry entry (API path, CLI aliases)."""
        return BY_NAME[self.name]

    @property
    def noun(self) -> str:
        """How its REST API's errors name it ("HTTPRoute ns/name not found")."""
        return self.name

    # === what revisions record (and rollbacks restore) ===

    def recorded(self, row: Any) -> Any:
        """A stored resource's spec, as revisions record it."""
        return row.spec

    def value(self, spec: Any) -> Any:
        """A validated spec as revisions record it."""
        return spec.model_dump(by_alias=True, exclude_none=True)

    def columns(self, value: Any) -> dict[str, Any]:
        """The column values that hold a recorded spec."""
        return {"spec": value}

    def snapshot(self, row: Any) -> Any:
        """A stored resource as revisions record it: its recorded spec, with its labels and
        annotations (see `kinds.labels`)."""
        return meta.record(self.recorded(row), row.labels, row.annotations)

    def stored(self, snapshot: Any) -> dict[str, Any]:
        """The column values that hold a resource as revisions record it (`snapshot`)."""
        spec, labels, annotations = meta.split(snapshot)
        return {**self.columns(spec), "labels": labels, "annotations": annotations}

    def parse(self, row: Any) -> Any:
        """A stored resource's spec, validated (once per content: every generation's mesh load parses
        every row, and validating 10,000 routes again each time was most of a load; once per row
        object within the row cache's loads, `per_row`)."""
        return per_row(row, "spec", self._parse)

    def _parse(self, row: Any) -> Any:
        recorded = self.recorded(row)
        try:
            content = (self.name, orjson.dumps(recorded, option=orjson.OPT_SORT_KEYS))
        except TypeError:  # not plain JSON: no cache
            return self.spec.model_validate(recorded)
        spec = _PARSED.get(content)
        if spec is None:
            if len(_PARSED) >= PARSED_MAX:
                _PARSED.clear()
            spec = _PARSED[content] = self.spec.model_validate(recorded)
        return spec

    # === references ===

    def references(self, spec: Any, namespace: str, name: str) -> list[Ref]:
        """Every resource a spec of this kind names, in the order errors about them are reported."""
        return []

    def held(self, refs: list[Ref]) -> list[Ref]:
        """Of a spec's references, those an exclusive kind holds (by default every one)."""
        return refs

    def sections(self, value: Any) -> set[str]:
        """The names references may pick in a recorded spec (see `section_noun`)."""
        return set()

    def problems(self, spec: Any) -> list[tuple[Loc, str]]:
        """What is wrong across the parts of a spec that each validate alone (loc within the spec)."""
        return []

    def partial_problems(self, value: Any) -> list[tuple[Loc, str]]:
        """For a spec (as given: JSON) that does not validate: what `problems` finds among the parts
        that do, so that one bad field does not hide the rest (loc within the spec)."""
        return []

    def on_delete(self, session: Session, row: Any) -> None:
        """What goes with a deleted resource, in the same transaction."""

    # === the compiler's input ===

    def load(self, rows: list[Any]) -> dict[str, Any]:
        """This kind's fields of the compiler's input (`compiler.Mesh`), from its stored rows in
        namespace and name order."""
        raise NotImplementedError


# === shared by the kinds that reference services the same way ===


def target_reference(spec: Any, namespace: str) -> list[Ref]:
    """The service a policy is about (its targetRef)."""
    return [Ref(["targetRef"], "Service", spec.target_ref.namespace or namespace, spec.target_ref.name)]


def parent_references(parents: list[Any], namespace: str) -> list[Ref]:
    """The services a route attaches to (its parentRefs that are no Gateway)."""
    return [
        Ref(["parentRefs", i], "Service", p.namespace or namespace, p.name)
        for i, p in enumerate(parents)
        if not getattr(p, "is_gateway", False)
    ]


def backend_references(rules: list[Any], namespace: str) -> list[Ref]:
    """The services a route's rules send to (HTTPRoute and TCPRoute alike)."""
    return [
        Ref(["rules", r, "backendRefs", b], "Service", backend.namespace or namespace, backend.name)
        for r, rule in enumerate(rules)
        for b, backend in enumerate(rule.backend_refs)
    ]


def by_target(rows: list[Any], kind: Kind) -> list[tuple[str, str, Any]]:
    """Stored policy rows (in namespace and name order) as the compiler reads them: the service
    each targets ("ns/name"), the policy's own key, and its spec."""
    out = []
    for row in rows:
        spec = kind.parse(row)
        out.append((f"{spec.target_ref.namespace or row.namespace}/{spec.target_ref.name}", key(row), spec))
    return out


def route_views(rows: list[Any], kind: Kind) -> list[RouteView]:
    """Stored route rows as the compiler reads them (the same view of an unchanged row from one
    row-cache load to the next: `compile_memo` then knows it at once)."""

    def view(r: Any) -> RouteView:
        return RouteView(r.namespace, r.name, r.created_at, kind.parse(r))

    return [per_row(r, "view", view) for r in rows]
