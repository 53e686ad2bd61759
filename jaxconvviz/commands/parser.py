"""The ``jaxconvviz`` argument parser: the program's global options and a
subcommand per command module (:func:`new_parser`)."""

import argparse
import difflib
import re
from collections.abc import Iterable
from types import ModuleType

from jaxconvviz._version import __version__

__all__ = ["new_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse that suggests the nearest subcommand for a misspelt one."""

    def error(self, message: str):  # noqa: D401 -- argparse API
        m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if m:
            choices = re.findall(r"'([^']*)'", m.group(2)) or [
                c.strip() for c in m.group(2).split(",")]
            near = difflib.get_close_matches(m.group(1), choices, n=1)
            if near:
                message += f"; did you mean {near[0]!r}?"
        super().error(message)


def new_parser(commands: Iterable[ModuleType]) -> argparse.ArgumentParser:
    """The ``jaxconvviz`` parser with ``commands``' subcommands registered
    (each module's ``register(subparsers)``), in that order."""
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
    for module in commands:
        module.register(sub)
    return parser
