"""CLI subcommands, one module each; see :mod:`jaxconvviz.cli`.

Each module defines ``register(subparsers)`` and a handler ``run(args) -> int``.
Data flows one way: ``cli`` -> ``commands`` -> the library.
"""

from jaxconvviz.commands import (  # noqa: F401
    activations,
    atlas,
    common,
    demo,
    gradcam,
    kernels,
    weights,
)

# -- new command modules: import above, list below (order = order in --help) --
#: The subcommand modules. Order = order in ``--help``.
COMMANDS: list = [demo, atlas, activations, gradcam, kernels, weights]
