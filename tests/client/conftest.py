"""Fixtures shared with the server tests (real certificates for TLS/mTLS)."""

from __future__ import annotations

from server.conftest import certs, triton_python

__all__ = ["certs", "triton_python"]
