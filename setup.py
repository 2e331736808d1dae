"""The one C extension (store/_tokens.c, the replay ledger's inner step): optional, so an install on a
machine without a C compiler still works, on the pure-Python table (store/replay_ledger.py says which is
in use; only the speed differs). Everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("keyplane.store._tokens", ["src/keyplane/store/_tokens.c"], optional=True),
    ]
)
