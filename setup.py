"""Build hook for the optional C accelerator; everything else is in pyproject.toml.

``optional=True``: where no compiler or zlib headers exist, the build goes on without the
extension and the pure-Python decoder (same results, slower) is used.
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
        )
    ]
)
