"""``--message/-m`` for the verbs that write (apply, delete, rollback): why, kept
in the revision log beside who made the change (the token's name), as
``meshctl history`` shows them. The API takes it as the ``message`` query
parameter of every write."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

import typer

#: The API's limit on a message (a 422 past it).
MAX_MESSAGE = 500


def _checked(value: str | None) -> str | None:
    # Refused here, before anything is sent: `delete -f` would otherwise fail once per resource.
    if value is not None and len(value) > MAX_MESSAGE:
        raise typer.BadParameter(f"at most {MAX_MESSAGE} characters, got {len(value)}")
    return value


Message = Annotated[
    str | None,
    typer.Option(
        "--message",
        "-m",
        help=f"Why: kept with the revision this change records, shown by history (at most {MAX_MESSAGE} characters).",
        callback=_checked,
    ),
]


def with_message(path: str, message: str | None) -> str:
    """The API path with `message` as its query parameter, when there is one."""
    if not message:
        return path
    return f"{path}{'&' if '?' in path else '?'}{urlencode({'message': message})}"
