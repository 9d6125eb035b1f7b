"""Labels and annotations: what every resource keeps in its metadata beside
its spec, checked by Kubernetes' rules, and how the revision log records them.

A label key is an optional DNS-subdomain prefix and '/' then a name of at most
63 characters ([A-Za-z0-9._-], starting and ending alphanumeric); a value is
at most 63 of the same characters, or empty. Annotation keys follow the same
rule; their values are free text, all annotations of a resource together at
most 256 KiB. A bad entry is a 422 at its key (pydantic's loc for a bad key
ends in "[key]").

The revision log records a resource as its spec (see ``Kind.recorded``); a
resource with labels or annotations is recorded as its spec with one more
entry, ``metadata: {labels, annotations}`` (each only when not empty). No
spec has a field called ``metadata`` (specs refuse unknown fields), so a
record without that entry is a resource without labels: revisions written
before they were kept read back unchanged."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator

#: What a label name, the part of a key after its prefix, and a non-empty label value are.
_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
#: A key's prefix: a lower-case DNS subdomain.
_PREFIX = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
#: All the annotations of one resource, keys and values, in UTF-8 (Kubernetes' limit).
MAX_ANNOTATIONS_BYTES = 256 * 1024
#: Where the revision log keeps them in a record (see the module docstring).
RECORD_KEY = "metadata"


def _key_problem(key: str) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if slash and not prefix:
        return "the prefix before '/' is empty"
    if slash and (len(prefix) > 253 or not _PREFIX.fullmatch(prefix)):
        return "the prefix before '/' must be a DNS subdomain: lower-case letters, digits, '-' and '.', at most 253"
    if not name:
        return "the name is empty"
    if len(name) > 63:
        return f"the name{' after the prefix' if slash else ''} is {len(name)} characters: at most 63"
    if not _NAME.fullmatch(name):
        return "the name may hold letters, digits, '-', '_' and '.', and starts and ends with a letter or digit"
    return None


def _value_problem(value: str) -> str | None:
    if len(value) > 63:
        return f"{len(value)} characters: at most 63"
    if value and not _NAME.fullmatch(value):
        return "letters, digits, '-', '_' and '.', starting and ending with a letter or digit (or empty)"
    return None


def _key(key: str) -> str:
    if problem := _key_problem(key):
        raise ValueError(f"bad key {key!r}: {problem}")
    return key


def _value(value: str) -> str:
    if problem := _value_problem(value):
        raise ValueError(f"bad label value {value[:80]!r}: {problem}")
    return value


def _bounded(value: dict[str, str]) -> dict[str, str]:
    size = sum(len(k.encode()) + len(v.encode()) for k, v in value.items())
    if size > MAX_ANNOTATIONS_BYTES:
        raise ValueError(f"{size} bytes of annotations: at most {MAX_ANNOTATIONS_BYTES} (256 KiB) in all")
    return value


# pydantic reports a bad key at [..., key, "[key]"] and a bad value at [..., key].
Key = Annotated[str, AfterValidator(_key)]
LabelValue = Annotated[str, AfterValidator(_value)]

#: A resource's labels: what `get -l` selects on.
Labels = dict[Key, LabelValue]
#: A resource's annotations: notes for people and tools, kept and shown, never interpreted.
Annotations = Annotated[dict[Key, str], AfterValidator(_bounded)]


def record(spec: Any, labels: dict[str, str] | None, annotations: dict[str, str] | None) -> Any:
    """A resource as the revision log records it: its recorded spec, with its labels and
    annotations under `RECORD_KEY` when it has any."""
    meta = {name: dict(v) for name, v in (("labels", labels), ("annotations", annotations)) if v}
    return {RECORD_KEY: meta, **spec} if meta else spec


def split(value: Any) -> tuple[Any, dict[str, str], dict[str, str]]:
    """A record's spec, labels and annotations (none for records without them)."""
    if not isinstance(value, dict) or RECORD_KEY not in value:
        return value, {}, {}
    spec = {k: v for k, v in value.items() if k != RECORD_KEY}
    meta = value[RECORD_KEY] or {}
    return spec, dict(meta.get("labels") or {}), dict(meta.get("annotations") or {})
