"""EncryIP runtime: serve confused labels, decrypt them locally, attribute leaks.

Nothing in this package imports torch.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
