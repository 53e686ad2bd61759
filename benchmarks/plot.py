"""Draw benchmark JSON files into one PNG (matplotlib, imported here only)."""

from __future__ import annotations

__all__ = ["plot", "plot_peers"]

import json
import os


def plot(paths: list[str], out: str) -> None:
    """One figure from benchmark JSON files: per-filter time of every
    ``filters`` case (JAX one-at-a-time, PyTorch one-at-a-time, batched per
    dtype; log scale) per device, and the per-layer atlas times."""
    from matplotlib.figure import Figure

    docs = []
    for p in paths:  # "file.json=label" names the device in the legend
        path, _, label = p.partition("=") if not os.path.exists(p) else (p, "", "")
        with open(path) as fh:
            docs.append(json.load(fh))
        docs[-1]["label"] = label

    def name(d):
        dev = d.get("environment") or d["device"]
        if d["label"]:
            return d["label"]
        if dev["platform"] == "cpu":
            return f"{dev['cpu']} CPU, {dev['cpu_count']} cores"
        return dev["device_kind"]

    filt = [(name(d), c) for d in docs for c in d["cases"]
            if c.get("kind") == "filters" and "error" not in c]
    atlas = [(name(d), c) for d in docs for c in d["cases"]
             if c.get("kind") == "atlas" and "error" not in c]
    devices = list(dict.fromkeys(dev for dev, _ in filt))
    ncols = len(devices) + (1 if atlas else 0)
    fig = Figure(figsize=(6.5 * ncols, 5.0), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    for ax, dev in zip(axes, devices, strict=False):
        cases = [c for d_, c in filt if d_ == dev]
        many = len({c["layer"] for c in cases}) > 4

        def label(c, many=many):
            if many:  # short names; size and count go in the title
                return c["layer"].replace("block", "b").replace("_conv", "c")
            return f"{c['layer']}\n{c['size']}px x{c['n']}"

        labels = list(dict.fromkeys(label(c) for c in cases))
        series = {"JAX, one at a time": {}, "PyTorch, one at a time": {}}
        for c in cases:
            lab = label(c)
            if "baseline_ms_per_filter" in c:
                series["JAX, one at a time"][lab] = c["baseline_ms_per_filter"]
            if "torch_ms_per_filter" in c:
                series["PyTorch, one at a time"][lab] = c["torch_ms_per_filter"]
            series.setdefault(f"jaxconvviz batched, {c['dtype']}", {})[lab] = \
                c["batched_ms_per_filter"]
        series = {k: v for k, v in series.items() if v}
        width = 0.8 / len(series)
        for i, (name, vals) in enumerate(series.items()):
            xs = [j + (i - (len(series) - 1) / 2) * width for j, lab in
                  enumerate(labels) if lab in vals]
            ax.bar(xs, [vals[lab] for lab in labels if lab in vals], width,
                   label=name)
        ax.set_yscale("log")
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_ylabel("ms per filter (40 steps)")
        extra = f", {cases[0]['size']} px, {cases[0]['n']} filters" if many else ""
        ax.set_title(f"Filter patterns on {dev}{extra}", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    if atlas:
        ax = axes[-1]
        for dev, c in atlas:
            layers = list(c["per_layer"])
            ax.plot(range(len(layers)), [c["per_layer"][x]["s"] for x in layers],
                    marker="o", label=f"{dev}, {c['dtype']}: {c['batched_s']:.1f} s "
                    f"total")
        ax.set_xticks(range(len(layers)), [x.replace("block", "b").replace(
            "_conv", "c") for x in layers], fontsize=8)
        ax.set_ylabel("seconds per layer (every filter)")
        ax.set_title(f"Full VGG16 atlas, {atlas[0][1]['n']} filters, "
                     f"{atlas[0][1]['size']} px", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    from jaxconvviz._atomic import atomic_write

    atomic_write(out, lambda fh: fig.savefig(fh, dpi=110, format="png"))


_UNIT = {"render": "filter"}
#: Bar colour by the 3x3 convolution setting a CAM record ran with
#: (``Backend.conv3x3`` resolved; 0.x records name "by_shape" "auto").
_SETTING_COLOURS = {"conv": "tab:blue", "by_shape": "tab:green", "auto": "tab:green",
                    "winograd": "tab:green", None: "tab:gray"}


def _peer_label(c: dict) -> str:
    if c["kind"] == "render":
        return f"render vs lucent, {c.get('layer', '')}, {c.get('steps', '?')} steps"
    net = "ResNet50" if c["kind"] == "resnet50" else "VGG16"
    n = c.get("n")
    images = f", {n} image{'s' if n != 1 else ''}" if n else ""
    setting = c.get("conv3x3_impl")
    return f"{net} {c.get('method', '')}{images}" + (
        f", 3x3 {setting}" if setting else "")


def plot_peers(paths: list[str], out: str) -> None:
    """The speed-up over the peer (peer seconds / ours, per image; per
    filter for render) of every measured peer record (cam, resnet50, render)
    in benchmark JSON files, one horizontal bar each in file order, coloured
    by the 3x3 convolution setting, with its target and both times."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    recs, names = [], []
    for p in paths:
        with open(p) as fh:
            d = json.load(fh)
        e = d.get("environment", {})
        th = (d.get("peers") or {}).get("torch_threads")
        torch = f", PyTorch on {th} thread{'s' if th != 1 else ''}" if th else ""
        names.append((f"{e.get('cpu')}, {e.get('cpu_count')} cores"
                      if e.get("platform") == "cpu" else e.get("device_kind"))
                     + torch)
        for c in d["cases"]:
            if c.get("kind") in ("cam", "resnet50", "render") and \
                    c.get("speedup_vs_peer") is not None:
                recs.append(c)
    if not recs:
        raise ValueError(f"no measured peer records (cam, resnet50, render) in "
                         f"{paths}")
    n = len(recs)
    fig = Figure(figsize=(10.0, 0.36 * n + 2.2), layout="constrained")
    ax = fig.subplots()
    ys = list(range(n))[::-1]  # the first record on top
    ratio = [c["speedup_vs_peer"] for c in recs]
    settings = [c.get("conv3x3_impl") for c in recs]
    ax.barh(ys, ratio, 0.7, color=[_SETTING_COLOURS.get(s, "tab:gray")
                                   for s in settings])
    right = 1.55 * max(max(ratio), max(c["target_speedup_vs_peer"] for c in recs))
    for y, c, r in zip(ys, recs, ratio, strict=True):
        tgt = c["target_speedup_vs_peer"]
        ax.plot([tgt, tgt], [y - 0.45, y + 0.45], color="black", lw=1.6)
        unit = _UNIT.get(c["kind"], "image")
        ours, peer = c[f"ours_s_per_{unit}"], c[f"peer_s_per_{unit}"]
        ax.annotate(f"{r:.2f}x   ({ours:.3g} s vs {peer:.3g} s per {unit})",
                    (max(r, tgt), y), textcoords="offset points", xytext=(5, 0),
                    va="center", fontsize=8.5)
    ax.set_yticks(ys, [_peer_label(c) for c in recs], fontsize=9)
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlim(0, right)
    ax.axvline(1.0, color="0.4", ls=":", lw=1)
    ax.set_xlabel("speed-up over the peer: peer seconds / jaxconvviz seconds "
                  "(higher is better)")
    ax.grid(axis="x", alpha=0.3)
    handles = [Patch(color=_SETTING_COLOURS[k], label=f"3x3 convolutions: {k}")
               for k in ("conv", "by_shape", "auto", "winograd") if k in settings]
    handles += [Line2D([], [], color="black", lw=1.6, label="target of the issue"),
                Line2D([], [], color="0.4", ls=":", lw=1, label="as fast as the peer")]
    fig.legend(handles=handles, fontsize=8.5, loc="outside lower center", ncol=4)
    ax.set_title("jaxconvviz vs pytorch-grad-cam / lucent, 224 px RGB images\n"
                 f"{' / '.join(dict.fromkeys(names))}", fontsize=10.5)
    from jaxconvviz._atomic import atomic_write

    atomic_write(out, lambda fh: fig.savefig(fh, dpi=110, format="png"))
