"""Errors of the arbitrator. Every one means "no decision could be made" (exit code 2)."""

from __future__ import annotations

from encryip_runtime.exceptions import EncryIPError

__all__ = ["ArbitrationInputError"]


class ArbitrationInputError(EncryIPError):
    """An input the arbitrator cannot decide on: mismatched, malformed or too weak."""
