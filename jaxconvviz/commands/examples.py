"""``jaxconvviz examples SOURCE``: every unit's top dataset examples and
statistics over a whole image dataset (:func:`jaxconvviz.dataset_examples`).

Examples::

    jaxconvviz examples photos/ --layers block3_conv1 block4_conv1 --k 9
    jaxconvviz examples 'shots/**/*.jpg' --out ex --batch-size 64 --resume
    jaxconvviz examples files.txt --model resnet50 --layers conv3_block1_out
    jaxconvviz examples photos/ --distributed --out ex   # one per process

Writes into ``--out`` (default ``examples_out``)::

    result/                 the DatasetExamples (.npz + JSON; load it with
                            jcv.DatasetExamples.load, or `report --examples`)
    stats.csv               one row per unit: layer, unit, mean, std, max,
                            frac_pos, selectivity, dead
    <layer>_units.png       each unit's top crop, dead units marked
    <layer>_lists.png       the most selective units; the dead ones
    units/<layer>_<k>.png   a unit's top-k crops with values and file names
                            (the --unit-figures most selective units)
    checkpoint/             while running: --resume continues from it
                            (removed once the result is written)

Every file is written atomically; process 0 writes under ``--distributed``.
"""

from __future__ import annotations

import argparse
import csv
import io
import shutil
from pathlib import Path

from jaxconvviz.commands.common import (
    INTERRUPT_NOTES,
    CLIError,
    add_model_args,
    init_distributed,
    load_model_and_params,
    out_dir,
    save_bytes,
    save_figure,
    say,
)

#: Columns of stats.csv.
CSV_COLUMNS = ("layer", "unit", "mean", "std", "max", "frac_pos", "selectivity",
               "dead")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "examples", help="every unit's top dataset examples and statistics",
        description="Stream an image dataset through the network once and keep, "
        "for every unit of the chosen layers, its top-k examples (image, "
        "position, value; at most one position per image) and its statistics "
        "(mean, std, max, fraction > 0, histogram). Writes the result folder, "
        "figures and a CSV of per-unit statistics to --out. Bad image files are "
        "skipped with one warning each; Ctrl-C leaves a checkpoint that "
        "--resume continues.",
    )
    p.add_argument("source", metavar="SOURCE",
                   help="the images: a folder (searched recursively for .jpg "
                   ".jpeg .png .webp .bmp .gif), a quoted glob, a .txt file of "
                   "paths, or one image file")
    p.add_argument("--layers", nargs="+", default=None, metavar="LAYER",
                   help="layers with a spatial map (default: every conv layer)")
    p.add_argument("--k", type=int, default=9, metavar="K",
                   help="top examples kept per unit (default: 9)")
    p.add_argument("--out", default="examples_out", metavar="DIR",
                   help="output folder (default: examples_out)")
    p.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="images per step (default: the library's choice)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="network compute dtype (default: float32; bfloat16 is "
                   "faster on GPUs)")
    p.add_argument("--size", type=int, default=None, metavar="PX",
                   help="input side for models without a fixed input size "
                   "(default: the model's, else 224)")
    p.add_argument("--border", default="exclude",
                   choices=("exclude", "keep", "mark"),
                   help="positions whose receptive field lies mostly outside the "
                   "image: exclude (default), keep, or keep and mark them")
    p.add_argument("--resume", action="store_true",
                   help="continue from --out's checkpoint (an interrupted or "
                   "killed run); the result equals an uninterrupted run's")
    p.add_argument("--checkpoint-every", type=int, default=1000, metavar="N",
                   help="write a checkpoint every N images (default: 1000; "
                   "also on Ctrl-C)")
    p.add_argument("--unit-figures", type=int, default=8, metavar="N",
                   help="a top-k figure for the N most selective units of each "
                   "layer (default: 8; 0: none)")
    p.add_argument("--crop-size", type=int, default=96, metavar="PX",
                   help="side of the crops in the figures (default: 96)")
    p.add_argument("--distributed", action="store_true",
                   help="call jax.distributed.initialize() first (SLURM/Open MPI "
                   "auto-detected, else JAX_COORDINATOR_ADDRESS, "
                   "JAX_NUM_PROCESSES, JAX_PROCESS_ID); each process reads its "
                   "shard of the files, process 0 writes")
    add_model_args(p)
    p.set_defaults(func=run)


def _check_args(args) -> None:
    if not str(args.source).strip():
        raise CLIError("SOURCE must name a folder, a glob, a .txt file of paths "
                       "or an image file; got an empty string.")
    for flag, v, lo in (("--k", args.k, 1), ("--batch-size", args.batch_size, 1),
                        ("--size", args.size, 1),
                        ("--checkpoint-every", args.checkpoint_every, 1),
                        ("--unit-figures", args.unit_figures, 0),
                        ("--crop-size", args.crop_size, 8)):
        if v is not None and v < lo:
            raise CLIError(f"{flag} must be >= {lo}; got {v}.")


def _layers(args, model) -> list[str]:
    if args.layers is None:
        if not model.conv_layers:
            raise CLIError("the model has no conv layers; name --layers.")
        return list(model.conv_layers)
    valid = model.spatial_layers
    for layer in args.layers:
        if layer not in valid:
            from jaxconvviz.models.weights import did_you_mean

            raise CLIError(f"--layers must name layers with a spatial map, one of "
                           f"{', '.join(valid)}; got {layer!r}"
                           f"{did_you_mean(layer, valid) or '.'}")
    if len(set(args.layers)) != len(args.layers):
        raise CLIError(f"--layers names a layer twice: {' '.join(args.layers)}.")
    return list(args.layers)


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    d = out_dir(args.out)
    ckpt = d / "checkpoint"
    if ckpt.exists() and not args.resume:
        raise CLIError(f"{str(ckpt)!r} holds an unfinished run; pass --resume to "
                       "continue it, or remove that folder to start again.")
    if args.distributed:
        init_distributed()
    import jax

    model, params, desc = load_model_and_params(args, include_top=False)
    layers = _layers(args, model)
    from jaxconvviz.dataset.sources import open_source

    ds = open_source(args.source, what="SOURCE")  # refuses empty/unreadable now
    main = jax.process_index() == 0
    if main:
        say(f"examples of {desc}: {len(layers)} layer(s), "
            f"{sum(model.channels(x) for x in layers):,} units, top {args.k}, "
            f"over {len(ds):,} image(s) from {args.source}"
            + (" (resuming)" if args.resume and ckpt.exists() else ""))
    result = _compute(args, ds, model, params, layers, ckpt)
    if not main or result is None:
        return 0
    try:
        write_outputs(result, d, desc=desc, unit_figures=args.unit_figures,
                      crop_size=args.crop_size)
    except KeyboardInterrupt:
        if ckpt.exists():  # the pass is complete there: nothing to recompute
            INTERRUPT_NOTES.append(
                f"while writing; the finished pass is in {str(ckpt)!r}: "
                "`--resume` writes the outputs without recomputing it")
        raise
    shutil.rmtree(ckpt, ignore_errors=True)
    return 0


def _compute(args, ds, model, params, layers, ckpt):
    import jax

    from jaxconvviz.dataset import dataset_examples
    from jaxconvviz.run import Run

    run = Run(batch_size=args.batch_size, dtype=args.dtype,
              progress=jax.process_index() == 0)
    try:
        return dataset_examples(
            params, ds, layers=layers, k=args.k, model=model, run=run,
            border=args.border, checkpoint=str(ckpt),
            checkpoint_every=args.checkpoint_every, resume=args.resume,
            size=args.size)
    except KeyboardInterrupt:
        if ckpt.exists():
            INTERRUPT_NOTES.append(f"(the checkpoint in {str(ckpt)!r} lets "
                                   "`--resume` continue)")
        raise


def stats_csv(result) -> str:
    """The per-unit statistics of ``result`` as CSV text (:data:`CSV_COLUMNS`;
    ``dead`` is 1 for units never > 0 over the dataset)."""
    import numpy as np

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for layer, ex in result.layers.items():
        sel = np.asarray(ex.selectivity(), np.float64)
        dead = np.zeros(len(sel), bool)
        dead[np.asarray(ex.dead(), int)] = True
        for u in range(len(sel)):
            w.writerow([layer, u] + [f"{float(np.asarray(getattr(ex, f))[u]):.7g}"
                                     for f in ("mean", "std", "max", "frac_pos")]
                       + [f"{sel[u]:.7g}", int(dead[u])])
    return buf.getvalue()


def write_outputs(result, d: Path, *, desc: str = "", unit_figures: int = 8,
                  crop_size: int = 96) -> None:
    """Write ``result`` (a DatasetExamples) into ``d``: the result folder,
    ``stats.csv`` and the figures (see the module docstring)."""
    from jaxconvviz.plotting import (
        plot_layer_examples,
        plot_unit_examples,
        plot_unit_lists,
    )
    from jaxconvviz.report.dataset_pages import layer_summary, unit_examples

    result.save(d / "result")
    text = stats_csv(result)
    csv_path = save_bytes(lambda fh: fh.write(text.encode("utf-8")),
                          d / "stats.csv")
    n_img = len(result.names) - len(result.bad)
    source = f"{desc}; {n_img:,} images" + (
        f"; {len(result.bad)} unreadable file(s) skipped" if result.bad else "")
    n_figs = 0
    for layer in result.layers:
        s = layer_summary(result, layer, crop_size=crop_size)
        save_figure(plot_layer_examples(s.top_crops, s.top_values, layer=layer,
                                        dead=s.dead_mask, source=source),
                    d / f"{layer}_units.png")
        save_figure(plot_unit_lists(s.selectivity, s.dead_mask, layer=layer,
                                    top_crops_u8=s.top_crops, source=source),
                    d / f"{layer}_lists.png")
        n_figs += 2
        for u in s.by_selectivity[:unit_figures]:
            ux = unit_examples(result, layer, int(u), crop_size=crop_size)
            save_figure(plot_unit_examples(ux.crops, ux.values, ux.names,
                                           layer=layer, unit=int(u), source=source),
                        d / "units" / f"{layer}_{int(u)}.png")
            n_figs += 1
        say(f"{layer}: {len(s.dead_mask)} units, {int(s.dead_mask.sum())} dead over "
            f"the dataset; most selective: "
            + ", ".join(str(int(u)) for u in s.by_selectivity[:5]))
    if result.bad:
        say(f"skipped {len(result.bad)} unreadable file(s), listed in the result "
            f"(first: {result.bad[0][1]}: {result.bad[0][2]})")
    say(f"wrote {d / 'result'}, {csv_path} and {n_figs} figure(s) in {d}")
