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

Ctrl-C: exit code 130 within seconds, with one line saying what finished
and was kept; inside a long compiled call that cannot be cut short, the
backstop of :mod:`jaxconvviz._interrupt` ends the process after
``GRACE_SECONDS`` (temp files removed, nothing half-written).

Error policy: a user error -- a :class:`~jaxconvviz.commands.common.CLIError`
or one of the library's own input errors (:mod:`jaxconvviz.errors`) --
becomes one line on stderr and exit code 2, no traceback. Anything else is a
bug and surfaces as a traceback (exit 1): a ``ValueError`` from deep inside
NumPy or JAX is never dressed up as a user error. ``--debug`` shows the
traceback of user errors too. The environment's failures are user errors
too: an OSError such as a full disk or a read-only folder is one line; a
result that could not be written where asked is kept elsewhere and the line
says where (:func:`jaxconvviz.commands.common.save_bytes`). A ``--out``
folder made by a command that then failed is removed if empty. Warnings
print as one line, ``jaxconvviz COMMAND: warning: ...``, without Python's
file path and source line.
"""

from __future__ import annotations

import argparse
import errno
import re
import sys
import warnings
from pathlib import Path

from jaxconvviz._interrupt import watchdog
from jaxconvviz.commands import build_parser
from jaxconvviz.commands.common import (
    INTERRUPT_NOTES,
    CLIError,
    interrupted_message,
    rescued_message,
)
from jaxconvviz.errors import JaxConvVizError

#: OSErrors that the environment causes (not bugs): one line, exit 2.
ENVIRONMENT_ERRNOS = frozenset({
    errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
    errno.EISDIR, errno.ENOTDIR, errno.EIO, errno.EFBIG, errno.ENAMETOOLONG,
    errno.EEXIST, errno.ENOTEMPTY, errno.EMFILE, errno.ENOMEM,
})

__all__ = ["main", "build_parser"]


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (0 ok, 2 bad input or a
    failed write, 130 interrupted). Bugs raise."""
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse exits 2 itself on bad syntax
    made = _missing_dirs(getattr(args, "out", None))

    def remove_made():
        for d in made:  # deepest first; only folders left empty
            try:
                d.rmdir()
            except OSError:
                break

    def stuck(notes: list[str]) -> str:  # Ctrl-C inside one long compiled call
        INTERRUPT_NOTES[:0] = ["inside a compiled computation", *notes]
        return f"jaxconvviz {args.command}: {interrupted_message()}"

    with warnings.catch_warnings(), watchdog(stuck, cleanup=remove_made):
        warnings.showwarning = _plain_warning(args.command)
        try:
            return _run(parser, args)
        finally:
            remove_made()


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    def error(msg: str) -> int:
        kept = rescued_message()
        msg = msg if kept is None else f"{msg.rstrip('.')}; also {kept}"
        print(f"jaxconvviz {args.command}: error: {msg}", file=sys.stderr)
        return 2

    try:
        _cpu_devices(args.cpu_devices)
        _compile_cache(args.compile_cache)
        code = int(args.func(args) or 0)
        kept = rescued_message()
        if kept is not None:
            print(f"jaxconvviz {args.command}: error: {kept}", file=sys.stderr)
            return 2
        return code
    except (CLIError, JaxConvVizError) as e:
        if args.debug:
            raise
        text = str(e).strip()
        if isinstance(e, KeyError):  # str(KeyError) quotes its message
            text = text.strip("'\"")
        msg = text.splitlines()[0] if text else type(e).__name__
        return error(flagify(msg, _subparser(parser, args.command)))
    except OSError as e:
        if args.debug or e.errno not in ENVIRONMENT_ERRNOS:
            raise
        where = f"{e.filename}: " if e.filename else ""
        text = (e.strerror or str(e)).strip().splitlines()[0]
        return error(f"{where}{text}.")
    except KeyboardInterrupt:  # what finished is kept: say what and where
        print(f"jaxconvviz {args.command}: {interrupted_message()}",
              file=sys.stderr)
        return 130


def _missing_dirs(out) -> list[Path]:
    """The folders of ``--out`` (and above it) that do not exist yet, deepest
    first: the ones main() removes again if a failed run leaves them empty."""
    if not isinstance(out, str) or not out.strip():
        return []
    d, missing = Path(out), []
    while not d.exists() and d != d.parent:
        missing.append(d)
        d = d.parent
    return missing


def _plain_warning(command: str):
    """A ``warnings.showwarning`` that prints one plain line."""
    def show(message, category, filename, lineno, file=None, line=None):
        text = str(message).strip()
        text = text.splitlines()[0] if text else category.__name__
        print(f"jaxconvviz {command}: warning: {text}",
              file=sys.stderr if file is None else file, flush=True)
    return show


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
