"""AuthorizationPolicy (shaped like Istio's): who may call a service, and what.

Patterns are exact strings in which '*' matches any run of characters ('/' included), so
"/admin/*" covers "/admin/a/b" (not "/admin") and "spiffe://*/ns/ops/sa/*" any trust domain.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, model_validator
from pydantic import Field as PField

from meshctl.control.kinds.base import Kind, Ref, by_target, spec_family, target_reference
from meshctl.control.kinds.common import HEADER_NAME, ServiceRef, Spec


def _principal(value: str) -> str:
    if not value.startswith(("spiffe://", "*")):
        raise ValueError("a principal is a SPIFFE ID pattern: it starts with 'spiffe://' (or '*')")
    return value


def _path_pattern(value: str) -> str:
    if not value.startswith(("/", "*")):
        raise ValueError("a path pattern starts with '/' or '*'")
    if "?" in value or "#" in value:
        raise ValueError("paths are matched without the query: leave out '?' and '#'")
    return value


def _method(value: str) -> str:
    if value != value.upper():
        raise ValueError(f"methods match exactly and are upper-case: write {value.upper()!r}")
    if "*" in value:
        raise ValueError("methods match exactly: leave methods out to match any method")
    return value


#: Visible ASCII: what a SPIFFE ID or a request path carries.
_VISIBLE = r"^[\x21-\x7e]+$"
Principal = Annotated[str, PField(min_length=1, max_length=2048, pattern=_VISIBLE), AfterValidator(_principal)]
#: A namespace or service (the ns and sa of a SPIFFE ID): a DNS label, '*' allowed anywhere.
NamePattern = Annotated[str, PField(min_length=1, max_length=63, pattern=r"^[-a-z0-9*]+$")]
PathPattern = Annotated[str, PField(min_length=1, max_length=2048, pattern=_VISIBLE), AfterValidator(_path_pattern)]
#: An upper-case HTTP token (RFC 9110), matched exactly.
Method = Annotated[str, PField(min_length=1, max_length=32, pattern=HEADER_NAME), AfterValidator(_method)]


class AuthorizationSource(Spec):
    """Who calls: every list given must match (each is any-of). Only callers with a mesh
    identity (mTLS) can match; a plaintext caller in PERMISSIVE mode matches no source."""

    principals: list[Principal] | None = PField(default=None, min_length=1)
    namespaces: list[NamePattern] | None = PField(default=None, min_length=1)
    services: list[NamePattern] | None = PField(default=None, min_length=1)

    @model_validator(mode="after")
    def _not_empty(self) -> AuthorizationSource:
        if self.principals is None and self.namespaces is None and self.services is None:
            raise ValueError("a source needs principals, namespaces or services (leave out `from` to match any caller)")
        return self


class AuthorizationOperation(Spec):
    """What is called: every list given must match (each is any-of)."""

    paths: list[PathPattern] | None = PField(default=None, min_length=1)
    methods: list[Method] | None = PField(default=None, min_length=1)

    @model_validator(mode="after")
    def _not_empty(self) -> AuthorizationOperation:
        if self.paths is None and self.methods is None:
            raise ValueError("an operation needs paths or methods (leave out `to` to match any request)")
        return self


class AuthorizationFrom(Spec):
    source: AuthorizationSource


class AuthorizationTo(Spec):
    operation: AuthorizationOperation


class AuthorizationRule(Spec):
    """Matches a request that matches any `from` entry and any `to` entry; a rule without
    `from` matches any caller, one without `to` any request (so `{}` matches everything)."""

    from_: list[AuthorizationFrom] | None = PField(default=None, alias="from", min_length=1)
    to: list[AuthorizationTo] | None = PField(default=None, min_length=1)


class AuthorizationPolicySpec(Spec):
    """Who may call one service (like Istio's AuthorizationPolicy). DENY policies are
    evaluated first; once a service has an ALLOW policy, only what one allows gets through."""

    target_ref: ServiceRef
    action: Literal["ALLOW", "DENY"] = "ALLOW"
    #: A policy matches a request matching any rule; an ALLOW policy without rules allows nothing.
    rules: list[AuthorizationRule] = PField(default_factory=list, max_length=1000)


class AuthorizationPolicyKind(Kind):
    def references(self, spec: Any, namespace: str, name: str) -> list[Ref]:
        return target_reference(spec, namespace)

    def load(self, rows: list[Any]) -> dict[str, Any]:
        authz: dict[str, list[tuple[str, Any]]] = {}
        for target, k, spec in by_target(rows, self):  # by namespace and name: the compiler's rule order
            authz.setdefault(target, []).append((k, spec))
        return {"authz": authz}


KIND = AuthorizationPolicyKind(
    "AuthorizationPolicy",
    AuthorizationPolicySpec,
    spec_family("AuthorizationPolicy", AuthorizationPolicySpec, module=__name__),
    refers_to=("Service",),
)
