"""CLI subcommands, one module each; see :mod:`jaxconvviz.cli`."""

from . import common  # noqa: F401

# Each module defines register(subparsers). Order = order in --help.
COMMANDS: list = []


def _add(name: str) -> None:
    import importlib

    COMMANDS.append(importlib.import_module(f".{name}", __name__))


for _name in ("demo", "atlas", "activations", "gradcam", "kernels", "weights"):
    try:
        _add(_name)
    except ModuleNotFoundError as e:  # a verb not written yet
        if e.name != f"{__name__}.{_name}":
            raise
