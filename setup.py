"""Build of the optional C scanner of EOS dumps; every other setting is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "t0dqm.formats._dumpscan",
            ["t0dqm/formats/_dumpscan.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
