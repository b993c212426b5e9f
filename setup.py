"""Only the C extension lives here; everything else is in pyproject.toml.

The extension (the AoE target's hot path) is optional: without a C compiler the package installs without it
and `netbootgen serve` answers every frame in Python (`--hot-path python`).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "netbootgen.aoe._fastpath",
            ["netbootgen/aoe/_fastpath.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers", "-Wno-unused-parameter"],
            optional=True,
        )
    ]
)
