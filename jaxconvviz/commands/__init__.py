"""CLI subcommands, one module each; see :mod:`jaxconvviz.cli`."""

from . import activations, atlas, common, demo, gradcam, kernels, weights  # noqa: F401

#: Each module defines ``register(subparsers)``. Order = order in ``--help``.
COMMANDS: list = [demo, atlas, activations, gradcam, kernels, weights]
