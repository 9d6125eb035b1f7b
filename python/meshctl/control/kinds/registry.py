"""The kinds themselves, loaded from the modules the registry (``kinds``) names:
importing this registers every kind's table. crud, the routers, apply,
history and push iterate ``KINDS``."""

from __future__ import annotations

from importlib import import_module
from typing import cast

from meshctl.control.kinds import REGISTRY
from meshctl.control.kinds.base import Kind

#: Every kind, in the registry's order: the order apply writes them in.
KINDS = tuple(cast(Kind, import_module(f"meshctl.control.kinds.{e.module}").KIND) for e in REGISTRY)
BY_NAME = {k.name: k for k in KINDS}
assert tuple(BY_NAME) == tuple(e.name for e in REGISTRY), "a kind module's KIND has another kind's name"


def kind(name: str) -> Kind:
    """The kind called `name` ("HTTPRoute")."""
    return BY_NAME[name]
