"""Capped exponential backoff with full jitter, for the sidecar's loops that
retry the control plane: a fleet does not reconnect in lockstep."""

from __future__ import annotations

import random


class Backoff:
    """Capped exponential backoff with full jitter."""

    def __init__(self, base: float = 0.2, cap: float = 10.0):
        self.base, self.cap, self.failures = base, cap, 0

    def next_delay(self) -> float:
        self.failures += 1
        return random.uniform(self.base, min(self.cap, self.base * 2**self.failures))

    def reset(self) -> None:
        self.failures = 0
