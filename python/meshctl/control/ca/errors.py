"""What the CA refuses, each mapped to its own answer by the API."""

from __future__ import annotations


class CaError(Exception):
    """The CA's files cannot be used; the message says which file and why."""


class CsrRefused(Exception):
    """The CSR is malformed or asks for an identity the caller does not have."""

    def __init__(self, message: str, *, forbidden: bool = False):
        super().__init__(message)
        self.forbidden = forbidden


class RotationRefused(Exception):
    """A rotation step that cannot be taken now (a 409)."""
