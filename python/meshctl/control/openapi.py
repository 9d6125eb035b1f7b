"""Export the API contract: ``python -m meshctl.control.openapi > api/openapi.json``."""

from __future__ import annotations

import json
from typing import Any

from meshctl.control.app import create_app
from meshctl.control.settings import Settings


def document() -> dict[str, Any]:
    return create_app(Settings()).openapi()


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(render(), end="")
