"""Build hook for the one C extension; all metadata lives in pyproject.toml.

``encryip_runtime/crypto/_r255.c`` (ristretto255 fixed-base tables for SampDist)
is optional: without a C compiler the install still succeeds and the secure
profile falls back to libsodium (``encryip_runtime.crypto.r255_native``).
"""

from __future__ import annotations

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "encryip_runtime.crypto._r255",
            ["encryip_runtime/crypto/_r255.c"],
            define_macros=[("EIP_PYMODULE", "1")],
            # No -march=native: wheels and Docker layers move between machines.
            extra_compile_args=["-O3", "-std=gnu11", "-fno-strict-aliasing"],
            optional=True,
        )
    ]
)
