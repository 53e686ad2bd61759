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


def plot_peers(paths: list[str], out: str) -> None:
    """Ours vs the peer per image (CAM, ResNet50) or per filter (render),
    seconds on a log scale, from the peer records of benchmark JSON files;
    each bar pair labelled with the ratio and the target."""
    from matplotlib.figure import Figure

    recs, names = [], []
    for p in paths:
        with open(p) as fh:
            d = json.load(fh)
        e = d.get("environment", {})
        th = (d.get("peers") or {}).get("torch_threads")
        names.append((f"{e.get('cpu')}, {e.get('cpu_count')} cores"
                      if e.get("platform") == "cpu" else e.get("device_kind"))
                     + (f", torch {th} thread(s)" if th else ""))
        for c in d["cases"]:
            if c.get("kind") in ("cam", "resnet50", "render") and \
                    c.get("speedup_vs_peer") is not None:
                recs.append(c)
    if not recs:
        raise ValueError(f"no measured peer records (cam, resnet50, render) in "
                         f"{paths}")
    fig = Figure(figsize=(max(6.0, 1.1 * len(recs) + 2), 4.8), layout="constrained")
    ax = fig.subplots()
    xs = range(len(recs))
    unit = {"render": "filter"}
    ours = [c[f"ours_s_per_{unit.get(c['kind'], 'image')}"] for c in recs]
    peer = [c[f"peer_s_per_{unit.get(c['kind'], 'image')}"] for c in recs]
    ax.bar([x - 0.2 for x in xs], peer, 0.4, label="peer (pytorch-grad-cam / lucent)",
           color="tab:orange")
    ax.bar([x + 0.2 for x in xs], ours, 0.4, label="jaxconvviz", color="tab:green")
    for x, c, top in zip(xs, recs, map(max, peer, ours), strict=True):
        ok = "met" if c["met"] else "not met"
        tgt = c["target_speedup_vs_peer"]
        ax.annotate(f"{c['speedup_vs_peer']:.1f}x\n(>= {tgt:g}: {ok})", (x, top),
                    textcoords="offset points", xytext=(0, 3), ha="center",
                    fontsize=7)
    names_of = {"cam": "VGG16\n{method}", "resnet50": "ResNet50\n{method}",
                "render": "render vs lucent\n{layer}\n{steps} steps"}
    labels = [names_of[c["kind"]].format(**{"method": "", "layer": "",
                                            "steps": "", **c}) for c in recs]
    ax.set_xticks(list(xs), [t.replace("gradcam_elementwise", "gradcam_\nelementwise")
                             for t in labels], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("seconds per image (render: per filter)")
    ax.set_title(f"jaxconvviz vs peers on {' / '.join(dict.fromkeys(names))}, "
                 f"224 px", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    ax.margins(y=0.25)
    from jaxconvviz._atomic import atomic_write

    atomic_write(out, lambda fh: fig.savefig(fh, dpi=110, format="png"))
