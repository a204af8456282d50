"""Build hook for the optional C accelerators; everything else is in pyproject.toml.

``optional=True``: where no compiler or zlib headers exist, the build goes on without the
extensions and the pure-Python decoder and id filter (same results, slower) are used.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "protocol._speedups",
            ["protocol/_speedups.c"],
            libraries=["z"],
            optional=True,
            extra_compile_args=["-O2"],
        ),
        Extension(
            "meshsyncd.store._filter",
            ["meshsyncd/store/_filter.c"],
            optional=True,
            extra_compile_args=["-O2"],
        ),
    ]
)
