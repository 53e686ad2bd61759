"""The PyTorch side of the comparisons: the notes' one-filter-at-a-time loop
in PyTorch, and the peers pytorch-grad-cam and lucent.

Every import of torch, torchvision, pytorch_grad_cam or lucent is inside a
function: none is a dependency of jaxconvviz. :func:`available` says which
are installed; a case whose peer is missing records it as absent.
"""

from __future__ import annotations

__all__ = ["CAM_CLASSES", "PEERS", "JpegFolder", "available", "dataset_topk", "device",
           "notes_loop", "sync",
           "time_cam", "time_notes_loop", "versions", "vgg_classifier", "vgg_features"]

import importlib.util
import time

#: Import name of each optional peer.
PEERS = {"torch": "torch", "torchvision": "torchvision",
         "pytorch-grad-cam": "pytorch_grad_cam", "lucent": "lucent"}


def available(name: str) -> bool:
    """Whether the peer ``name`` (a key of :data:`PEERS`) is importable."""
    return importlib.util.find_spec(PEERS.get(name, name)) is not None


def versions() -> dict:
    """Installed peer versions (``"absent"`` for a missing one)."""
    from importlib import metadata

    dists = {"torch": "torch", "torchvision": "torchvision",
             "pytorch-grad-cam": "grad-cam", "lucent": "torch-lucent"}
    out = {}
    for name, dist in dists.items():
        try:
            out[name] = metadata.version(dist) if available(name) else "absent"
        except metadata.PackageNotFoundError:
            out[name] = "installed (version unknown)"
    if available("torch"):
        import torch

        out["torch_cuda"] = bool(torch.cuda.is_available())
        out["torch_threads"] = torch.get_num_threads()
    return out


def device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def vgg_features(params, model, layer: str):
    """A ``torch.nn.Sequential`` equal to ``model`` up to ``layer`` (NCHW,
    Keras kernels ``(kh, kw, in, out)`` transposed to ``(out, in, kh, kw)``);
    each conv is followed by its ReLU, as in torchvision's VGG16 ``features``
    (so torchvision's index ``i`` is this module's index ``i``)."""
    import numpy as np
    import torch

    mods = []
    for spec in model.layers[: model.layer_index(layer) + 1]:
        if spec.kind == "conv":
            k = np.asarray(params[spec.name]["kernel"], np.float32)  # HWIO
            conv = torch.nn.Conv2d(k.shape[2], k.shape[3], k.shape[:2], padding="same")
            conv.weight.data = torch.from_numpy(np.ascontiguousarray(
                k.transpose(3, 2, 0, 1)))
            conv.bias.data = torch.from_numpy(np.array(params[spec.name]["bias"],
                                                       np.float32))
            mods += [conv, torch.nn.ReLU()]
        elif spec.kind == "maxpool":
            mods.append(torch.nn.MaxPool2d(2))
    net = torch.nn.Sequential(*mods).to(device()).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def vgg_classifier(params, model):
    """The whole VGG16 with its dense top as a torch module (logits out,
    Keras' NHWC flatten order), conv weights from ``params``."""
    import numpy as np
    import torch

    feats = vgg_features(params, model, model.conv_layers[-1])
    dense = []
    for name in ("fc1", "fc2", "predictions"):
        k = np.asarray(params[name]["kernel"], np.float32)
        lin = torch.nn.Linear(k.shape[0], k.shape[1])
        lin.weight.data = torch.from_numpy(np.ascontiguousarray(k.T))
        lin.bias.data = torch.from_numpy(np.array(params[name]["bias"], np.float32))
        dense.append(lin)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.features = feats
            self.pool = torch.nn.MaxPool2d(2)
            self.fc1, self.fc2, self.pred = dense

        def forward(self, x):
            a = self.pool(self.features(x))
            a = a.permute(0, 2, 3, 1).flatten(1)  # NHWC flatten = Keras order
            a = torch.relu(self.fc1(a))
            a = torch.relu(self.fc2(a))
            return self.pred(a)

    net = Net().to(device()).eval()
    for p in net.parameters():
        p.requires_grad_(True)  # as pytorch-grad-cam users run it
    return net


def notes_loop(net, size: int, steps: int, filters, channels: int = 3) -> None:
    """The notes' method in PyTorch: one filter at a time, ``steps``
    normalised gradient steps on one image."""
    import torch

    dev = device()
    gen = torch.Generator(device="cpu").manual_seed(0)
    for k in filters:
        x = (torch.rand((1, channels, size, size), generator=gen) * 20 + 128).to(dev)
        for _ in range(steps):
            x.requires_grad_(True)
            loss = net(x)[:, k].mean()
            (g,) = torch.autograd.grad(loss, x)
            g = g / (g.pow(2).mean().sqrt() + 1e-5)
            x = (x + g).detach()
    sync()


def time_notes_loop(params, model, layer: str, size: int, steps: int,
                    n_time: int) -> float:
    """Seconds per filter of :func:`notes_loop` (warmed up first)."""
    net = vgg_features(params, model, layer)
    notes_loop(net, size, 2, [0])
    t0 = time.perf_counter()
    notes_loop(net, size, steps, list(range(n_time)))
    return (time.perf_counter() - t0) / n_time


#: jaxconvviz CAM method name -> pytorch-grad-cam class name.
CAM_CLASSES = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus",
               "gradcampp": "GradCAMPlusPlus", "xgradcam": "XGradCAM",
               "eigencam": "EigenCAM", "layercam": "LayerCAM",
               "scorecam": "ScoreCAM", "ablationcam": "AblationCAM",
               "hirescam": "HiResCAM", "eigengradcam": "EigenGradCAM",
               "fullgrad": "FullGrad", "gradcamelementwise": "GradCAMElementWise"}


def time_cam(net, target_layer, images_nchw, method: str, *, batch_size=None,
             warm: bool = True) -> tuple[float, object]:
    """Seconds for pytorch-grad-cam's ``method`` on ``images_nchw`` (float32
    numpy, the model's input domain), top-1 class targets, and its output.

    ``warm``: one untimed call on the same images first (the same shapes as
    the timed call: PyTorch's CPU backend may set up its kernels per input
    shape, so a warm-up on fewer images could leave the timed call paying
    for that)."""
    import numpy as np
    import pytorch_grad_cam
    import torch

    key = method.lower().replace("-", "").replace("_", "")
    if key not in CAM_CLASSES:
        raise ValueError(f"method {method!r} has no pytorch-grad-cam class in "
                         f"this table; known: {sorted(CAM_CLASSES)}")
    cls = getattr(pytorch_grad_cam, CAM_CLASSES[key])
    xt = torch.from_numpy(np.ascontiguousarray(images_nchw)).to(device())
    with cls(model=net, target_layers=[target_layer]) as cam:
        if key in ("scorecam", "ablationcam") and batch_size:
            cam.batch_size = batch_size
        if warm:
            cam(input_tensor=xt, targets=None)
            sync()
        t0 = time.perf_counter()
        res = cam(input_tensor=xt, targets=None)
        sync()
        return time.perf_counter() - t0, res


# ------------------------------------------------------- issue 31 (dataset)
#: Keras VGG16's ``preprocess_input`` ("caffe"): BGR means subtracted.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


class JpegFolder:
    """What a PyTorch user writes for a folder of images: a map-style
    ``Dataset`` decoding with PIL and resizing as Keras' ``load_img(...,
    target_size=(size, size))`` does (nearest neighbour, aspect not kept).
    Module level so ``DataLoader`` workers can pickle it."""

    def __init__(self, folder, size: int):
        import os

        self.files = sorted(os.path.join(folder, f) for f in os.listdir(folder)
                            if f.lower().endswith((".jpg", ".jpeg", ".png")))
        self.size = size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        import numpy as np
        import torch
        from PIL import Image

        with Image.open(self.files[i]) as im:
            im = im.convert("RGB").resize((self.size, self.size), Image.NEAREST)
            a = np.asarray(im, dtype=np.uint8)
        return torch.from_numpy(a.copy()), i


def dataset_topk(net, folder, *, size: int, batch_size: int, workers: int,
                 k: int = 9) -> dict:
    """The PyTorch user's dataset-examples loop: a ``DataLoader`` with
    ``workers`` decoding processes, a forward hook on every conv's ReLU of
    ``net`` (:func:`vgg_features`), and per unit a running ``torch.topk``
    over images of the per-image spatial max (one position per image: the
    argmax), under ``torch.inference_mode``. Returns per hooked layer
    ``(values (k, C), image indices (k, C), positions (k, C))``."""
    import torch

    relus = [m for i, m in enumerate(net) if isinstance(m, torch.nn.ReLU)]
    state: dict = {}
    cur: dict = {}

    def hook(j):
        def fn(_mod, _inp, out):
            v, pos = out.flatten(2).max(dim=2)           # (B, C) per-image max
            idx = cur["index"][:, None].expand_as(v)
            if j in state:
                pv, pi, pp = state[j]
                v, idx, pos = (torch.cat([pv, v]), torch.cat([pi, idx]),
                               torch.cat([pp, pos]))
            top, sel = torch.topk(v, min(k, v.shape[0]), dim=0)
            state[j] = (top, idx.gather(0, sel), pos.gather(0, sel))
        return fn

    handles = [m.register_forward_hook(hook(j)) for j, m in enumerate(relus)]
    loader = torch.utils.data.DataLoader(
        JpegFolder(folder, size), batch_size=batch_size, shuffle=False,
        num_workers=workers, persistent_workers=False)
    mean = torch.tensor(_CAFFE_MEAN_BGR).view(1, 3, 1, 1).to(device())
    try:
        with torch.inference_mode():
            for images, index in loader:
                x = images.to(device()).permute(0, 3, 1, 2).float()
                x = x.flip(1) - mean                     # RGB -> BGR, caffe mean
                cur["index"] = index.to(device())
                net(x)
    finally:
        for h in handles:
            h.remove()
    sync()
    return {j: tuple(t.cpu().numpy() for t in s) for j, s in state.items()}
