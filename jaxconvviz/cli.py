"""The ``jaxconvviz`` command line: parse -> load -> compute -> plot -> save.

Examples::

    jaxconvviz demo --out demo_out
    jaxconvviz atlas --layer block3_conv1 --filters 0:64 --size 150
    jaxconvviz activations chelsea.png --layers block1_conv1 block2_conv1
    jaxconvviz gradcam elephants.jpg --class 386
    jaxconvviz kernels --layer block1_conv1
    jaxconvviz weights fetch imagenet --top

Each subcommand lives in ``jaxconvviz/commands/<verb>.py`` with
``register(subparsers)``; the parser's ``func`` default is the handler
``run(args) -> int``. This is the only module family that writes files.
Every user error becomes one line on stderr and exit code 2, no traceback.
"""

from __future__ import annotations

import argparse
import sys

from jaxconvviz import __version__


class CLIError(Exception):
    """A user error the CLI reports as one line and exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    from jaxconvviz.commands import COMMANDS

    parser = argparse.ArgumentParser(
        prog="jaxconvviz",
        description="See what convnets learn: filter atlases, Grad-CAM, "
        "activation and kernel views, in JAX.",
    )
    parser.add_argument("--version", action="version",
                        version=f"jaxconvviz {__version__}")
    parser.add_argument(
        "--cpu-devices", default="auto", metavar="N",
        help="split XLA:CPU into N devices that filter ascent shards its "
        "filters over (jaxconvviz.use_cpu_cores); 'auto' (default): one per "
        "available core; 1: a single device. Ignored by GPU/TPU runs.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (0 ok, 2 bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse exits 2 itself on bad syntax
    try:
        _cpu_devices(args.cpu_devices)
        return int(args.func(args) or 0)
    except (CLIError, ValueError, TypeError, FileNotFoundError, OSError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"jaxconvviz {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"jaxconvviz {args.command}: interrupted", file=sys.stderr)
        return 130


def _cpu_devices(value: str) -> None:
    """Apply ``--cpu-devices`` before any JAX computation (see jaxconvviz.cpu)."""
    from jaxconvviz.cpu import use_cpu_cores

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


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
