"""Fixtures shared with tests/server (test certificates made with the openssl CLI)."""

from __future__ import annotations

from server.conftest import certs

__all__ = ["certs"]
