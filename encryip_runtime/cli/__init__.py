"""The ``encryip`` command line: one module per command, dispatched by ``main``."""

from __future__ import annotations
