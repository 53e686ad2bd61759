"""What every benchmark case shares: :class:`Ctx` (model, params, options)
and the classifier and images of the image cases."""

from __future__ import annotations

__all__ = ["Ctx", "classifier", "images"]

from benchmarks import torch_peers as tp


class Ctx:
    """What every case shares: model, params, options (an argparse namespace
    with the fields :func:`benchmarks.cli.build_parser` makes)."""

    def __init__(self, args, env: dict):
        import jax
        import jax.numpy as jnp

        import jaxconvviz as jcv

        self.args, self.env = args, env
        self.jax, self.jnp, self.jcv = jax, jnp, jcv
        self.key = jax.random.key(0)
        self.smoke = args.smoke
        self.cpu = jax.default_backend() == "cpu"
        if args.smoke:
            self.model = jcv.tiny_vgg16(include_top=False)
            self.params = self.model.init_params(jax.random.key(1))
            self.weights = "random (tiny VGG16)"
        else:
            self.model = jcv.VGG16(include_top=False)
            if args.weights == "random":
                self.params = self.model.init_params(jax.random.key(1), hw=(32, 32))
                self.weights = "random (Flax default init)"
            else:
                from jaxconvviz.models.weights import load_vgg16

                self.params = load_vgg16(args.weights)
                self.weights = args.weights
        self.steps = args.steps
        #: ``--channel-only`` as ``Backend.channel_only``: "auto" (the
        #: library's rule), True or False; set on :attr:`ascent_model`.
        self.channel_only = {"auto": "auto", "on": True, "off": False}[
            args.channel_only]
        self.peers = bool(args.peers)

    @property
    def ascent_model(self):
        """The filters/atlas cases' model: :attr:`model` with
        ``Backend.channel_only`` from ``--channel-only``."""
        return self.model.with_backend(channel_only=self.channel_only)

    @property
    def dtypes(self) -> tuple[str, ...]:
        return ("float32", "bfloat16") if self.args.dtype == "both" else (
            self.args.dtype,)

    def n_time(self, n: int) -> int:
        return max(1, min(n, self.args.baseline_filters))

    def torch_ok(self) -> bool:
        return self.peers and tp.available("torch")


def classifier(ctx: Ctx, size: int):
    """``(model, params)``: VGG16 with a classifier top (random top, conv
    layers from the benchmark weights; the tiny preset in --smoke)."""
    jax, jcv = ctx.jax, ctx.jcv
    if ctx.smoke:
        model = jcv.tiny_vgg16(include_top=True)
        return model, model.init_params(jax.random.key(2))
    model = jcv.VGG16(include_top=True)
    if size != 224:
        raise ValueError(f"gradcam cases need size 224 for the VGG16 classifier top; "
                         f"got {size}")
    params = model.init_params(jax.random.key(2), hw=(224, 224))
    # conv layers from the benchmark weights, random top (HED has none)
    params = {**params, **{k: v for k, v in ctx.params.items() if k in params}}
    return model, params


def images(ctx: Ctx, n: int, size: int):
    return ctx.jax.random.uniform(ctx.jax.random.key(3), (n, size, size, 3)) * 255.0
