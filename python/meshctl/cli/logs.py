"""Readable logs for the CLI, in the same shape as the data plane's."""

from __future__ import annotations

import logging
import os


def setup() -> logging.Logger:
    """Configure stderr logging once; the level comes from MESHCTL_LOG (default info)."""
    level = os.environ.get("MESHCTL_LOG", "info").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)5s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
    )
    return logging.getLogger("meshctl")
