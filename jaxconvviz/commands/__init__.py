"""CLI subcommands, one module each, and the parser; see :mod:`jaxconvviz.cli`.

Each module defines ``register(subparsers)`` and a handler ``run(args) -> int``.
Data flows one way: ``cli`` -> ``commands`` -> the library.
"""

import argparse

from jaxconvviz._version import __version__
from jaxconvviz.commands import (  # noqa: F401
    activations,
    atlas,
    common,
    demo,
    explain,
    gradcam,
    kernels,
    render,
    report,
    weights,
)

# -- new command modules: import above, list below (order = order in --help) --
#: The subcommand modules. Order = order in ``--help``.
COMMANDS: list = [demo, atlas, render, activations, gradcam, explain, kernels,
                  weights, report]


class _Parser(argparse.ArgumentParser):
    """argparse that suggests the nearest subcommand for a misspelt one."""

    def error(self, message: str):  # noqa: D401 -- argparse API
        import difflib
        import re

        m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if m:
            choices = re.findall(r"'([^']*)'", m.group(2)) or [
                c.strip() for c in m.group(2).split(",")]
            near = difflib.get_close_matches(m.group(1), choices, n=1)
            if near:
                message += f"; did you mean {near[0]!r}?"
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    """The ``jaxconvviz`` parser with every subcommand registered."""
    parser = _Parser(
        prog="jaxconvviz",
        description="See what convnets learn, in JAX: filter atlases and "
        "lucid-style feature visualization, CAMs and gradient attributions "
        "with faithfulness metrics, activation and kernel views, and an "
        "offline report of a whole network.",
    )
    parser.add_argument("--version", action="version",
                        version=f"jaxconvviz {__version__}")
    parser.add_argument(
        "--cpu-devices", default="auto", metavar="N",
        help="split XLA:CPU into N devices that filter ascent shards its "
        "filters over (jaxconvviz.use_cpu_cores); 'auto' (default): one per "
        "available core; 1: a single device. Ignored by GPU/TPU runs.")
    parser.add_argument(
        "--compile-cache", default=None, metavar="DIR",
        help="keep compiled XLA programs in DIR so the next run does not "
        "compile them again (jaxconvviz.use_compile_cache); default: "
        "$JAXCONVVIZ_COMPILE_CACHE, else ~/.cache/jaxconvviz/xla; 'off': none. "
        "JAX_COMPILATION_CACHE_DIR, when set, wins.")
    parser.add_argument(
        "--debug", action="store_true",
        help="show the full traceback of user errors too (bugs always show it)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND",
                                parser_class=_Parser)
    sub.required = True
    for module in COMMANDS:
        module.register(sub)
    return parser
