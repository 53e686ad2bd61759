"""The package version, in a module of its own so that any module can read it
without importing the package ``__init__`` (pyproject.toml reads it too)."""

__version__ = "1.0.0"
