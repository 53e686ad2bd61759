"""CLI subcommands, one module each, and the parser; see :mod:`jaxconvviz.cli`.

Each module defines ``register(subparsers)`` and a handler ``run(args) -> int``.
Data flows one way: ``cli`` -> ``commands`` -> the library.
"""

import argparse

from jaxconvviz.commands import (  # noqa: F401
    activation_atlas,
    activations,
    atlas,
    common,
    demo,
    examples,
    explain,
    factorize,
    gradcam,
    kernels,
    render,
    report,
    weights,
)
from jaxconvviz.commands.parser import new_parser

#: The subcommand modules (a new command: import it above, list it here).
#: Order = order in ``--help``.
COMMANDS: list = [demo, atlas, render, activations, gradcam, explain, kernels,
                  examples, activation_atlas, factorize, weights, report]


def build_parser() -> argparse.ArgumentParser:
    """The ``jaxconvviz`` parser with every subcommand registered."""
    return new_parser(COMMANDS)
