"""Reproducible benchmarks (``python -m benchmarks.<name>``; ``make bench`` runs them all).

The releases they write are throwaway, but vaults are encrypted at rest: unless the
caller set one, the benchmarks use this fixed, announced passphrase (and their
subprocesses inherit it).
"""

import os

os.environ.setdefault("ENCRYIP_VAULT_PASSPHRASE", "encryip-benchmarks-passphrase")
