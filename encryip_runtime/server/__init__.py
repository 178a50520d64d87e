"""gRPC runtime: config, micro-batcher, servicers (encryip.v1, inference v2), metrics, app.

Import what you need from the submodules (``server.app.create_server``); this package
imports nothing heavy by itself.
"""

from __future__ import annotations
