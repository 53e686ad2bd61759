"""The ``jaxconvviz`` command line: parse -> load -> compute -> plot -> save.

Examples::

    jaxconvviz demo --out demo_out
    jaxconvviz atlas --layer block3_conv1 --filters 0:16 --size 64 --out out
    jaxconvviz activations chelsea.png --layers block1_conv1 block2_conv1
    jaxconvviz gradcam elephants.jpg --class 386
    jaxconvviz kernels --layer block1_conv1
    jaxconvviz weights fetch imagenet --top

Each subcommand lives in ``jaxconvviz/commands/<verb>.py`` (see
:mod:`jaxconvviz.commands`); data flows one way: ``cli`` -> ``commands`` ->
the library. The commands are the only module family that writes files.

Error policy: a user error -- a :class:`~jaxconvviz.commands.common.CLIError`
or one of the library's own input errors (:mod:`jaxconvviz.errors`) --
becomes one line on stderr and exit code 2, no traceback. Anything else is a
bug and surfaces as a traceback (exit 1): a ``ValueError`` from deep inside
NumPy or JAX is never dressed up as a user error. ``--debug`` shows the
traceback of user errors too.
"""

from __future__ import annotations

import argparse
import re
import sys

from jaxconvviz.commands import build_parser
from jaxconvviz.commands.common import CLIError
from jaxconvviz.errors import JaxConvVizError

__all__ = ["main", "build_parser"]


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (0 ok, 2 bad input,
    130 interrupted). Bugs raise."""
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse exits 2 itself on bad syntax
    try:
        _cpu_devices(args.cpu_devices)
        _compile_cache(args.compile_cache)
        return int(args.func(args) or 0)
    except (CLIError, JaxConvVizError) as e:
        if args.debug:
            raise
        text = str(e).strip()
        if isinstance(e, KeyError):  # str(KeyError) quotes its message
            text = text.strip("'\"")
        msg = text.splitlines()[0] if text else type(e).__name__
        msg = flagify(msg, _subparser(parser, args.command))
        print(f"jaxconvviz {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"jaxconvviz {args.command}: interrupted", file=sys.stderr)
        return 130


#: Library argument names whose command-line flag has another name.
PYTHON_TO_DEST = {"filter_indices": "filters", "learning_rate": "lr",
                  "source": "weights", "include_top": "top",
                  "images_rgb": "images", "filters_per_layer": "filters_per_layer"}


def _subparser(parser: argparse.ArgumentParser, command: str):
    for action in parser._actions:  # argparse has no public accessor
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(command)
    return None


def flagify(message: str, subparser: argparse.ArgumentParser | None) -> str:
    """Say the library's argument names as the command's flags.

    ``size=100000 px needs ...`` -> ``--size 100000 px needs ...``;
    ``learning_rate must be > 0`` -> ``--lr must be > 0``;
    ``include_top=True needs ...`` -> ``--top needs ...``. Only names that the
    command has a flag for, and only where a name is used as one (followed by
    ``=`` or `` must``), so prose is left alone.
    """
    if subparser is None:
        return message
    flags = {a.dest: a for a in subparser._actions if a.option_strings}

    def repl(m: re.Match) -> str:
        action = flags.get(PYTHON_TO_DEST.get(m["name"], m["name"]))
        if action is None:
            return m[0]
        flag = max(action.option_strings, key=len)
        if m["must"]:
            return f"{flag} must"
        if action.nargs == 0:  # a switch: include_top=True -> --top
            return flag if m["value"] == "True" else f"no {flag}"
        return f"{flag} {m['value'].strip(QUOTES)}"

    return _NAMED_ARG.sub(repl, message)


QUOTES = "'\""
_NAMED_ARG = re.compile(
    r"(?<![\w.'`-])(?P<name>[a-z_][a-z0-9_]*)"
    r"(?:(?P<must> must\b)|=(?P<value>'[^']*'|\"[^\"]*\"|[^\s,;)]+))")


def _cpu_devices(value: str) -> None:
    """Apply ``--cpu-devices`` before any JAX computation (see
    jaxconvviz.backend.cpu)."""
    from jaxconvviz.backend.cpu import use_cpu_cores

    if value == "auto":
        try:
            use_cpu_cores()
        except RuntimeError:
            # main() called inside a process whose JAX already runs (tests,
            # notebooks): the caller's device setup stands; nothing to split.
            pass
        return
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise CLIError(f"--cpu-devices must be 'auto' or an int >= 1; got {value!r}.")
    try:
        use_cpu_cores(n)
    except RuntimeError as e:
        raise CLIError(str(e)) from None


def _compile_cache(value: str | None) -> None:
    """Apply ``--compile-cache`` (see jaxconvviz.backend.compile_cache)."""
    from jaxconvviz.backend.compile_cache import use_compile_cache

    try:
        use_compile_cache(value)
    except JaxConvVizError as e:
        raise CLIError(str(e).replace("directory=", "--compile-cache ", 1)) from None


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
