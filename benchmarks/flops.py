"""FLOP counts: the analytic convolution count (checked by hand in the tests)
and XLA's cost analysis of the compiled programs the library runs.

XLA's ``cost_analysis()`` of a program with a ``while`` loop (``lax.fori_loop``)
counts the loop body once, whatever the trip count (measured: the same count
for 1 and 4 steps). The ascent's count is therefore taken from the one-step
program (:func:`ascent_step_xla_flops`: the engine's jitted step, lowered
for the chunk's shape) times the steps, never from the fori-loop program.
"""

from __future__ import annotations

__all__ = ["ascent_flops", "ascent_step_xla_flops", "compiled_flops", "conv_macs",
           "forward_flops", "jit_xla_flops"]

from jaxconvviz.models import shapes


def conv_macs(model, layer: str, size: int, channel_only: bool = False) -> int:
    """Forward multiply-adds of one ``size`` px image through the convolutions
    up to ``layer`` (``channel_only``: ``layer`` with one output channel); the
    library's :func:`jaxconvviz.models.shapes.conv_macs`."""
    return shapes.conv_macs(model, layer, size, channel_only=channel_only)


def ascent_flops(model, layer: str, size: int, steps: int, n: int,
                 channel_only: bool = False) -> float:
    """Analytic FLOPs of ``n`` filters x ``steps`` ascent steps: forward plus
    input gradient of every conv up to ``layer`` (each the forward's
    multiply-adds), 2 FLOP per multiply-add. Pools, ReLUs, the normalisation
    and the update are not counted."""
    return 2.0 * 2.0 * conv_macs(model, layer, size, channel_only) * steps * n


def forward_flops(model, size: int, n: int, upto: str | None = None) -> float:
    """Analytic FLOPs of the convs' forward pass of ``n`` images up to ``upto``
    (default: the last conv layer), 2 per multiply-add."""
    upto = upto or model.conv_layers[-1]
    return 2.0 * conv_macs(model, upto, size) * n


def compiled_flops(compiled) -> float | None:
    """XLA's FLOP count of a compiled program (``jax.stages.Compiled``), or
    None if the backend gives none."""
    ca = compiled.cost_analysis()
    if isinstance(ca, (list, tuple)):
        ca = ca[0] if ca else None
    if not ca or "flops" not in ca:
        return None
    return float(ca["flops"])


def ascent_step_xla_flops(params, model, layer: str, size: int, chunk: int, *,
                          dtype: str = "float32", channel_only=False,
                          conv: str = "auto",
                          pre_activation: bool | None = None) -> float | None:
    """XLA's FLOPs of ONE ascent step of a chunk of ``chunk`` filters, from
    the step program the library compiles for :func:`jaxconvviz.filter_patterns`
    and :func:`jaxconvviz.filter_atlas` (the engine's book-style step on one
    device, lowered by :func:`jaxconvviz.featureviz.atlas.lowered_step`).

    ``channel_only`` and ``conv`` are set on the model's backend
    (``Backend.channel_only``: True, False or "auto"; ``Backend.conv``,
    "auto": the model's own),
    ``dtype`` is ``Run.dtype``; ``pre_activation`` None: ``jcv.Book()``'s
    default. Multiply by steps and chunks for a whole request. Raises
    whatever the engine raises if its public pieces change (the caller
    records it).
    """
    import jaxconvviz as jcv
    from jaxconvviz.featureviz.atlas import lowered_step

    style = jcv.Book() if pre_activation is None else jcv.Book(
        pre_activation=pre_activation)
    m = model.with_backend(channel_only=channel_only,
                           **({} if conv == "auto" else {"conv": conv}))
    lowered = lowered_step(params, layer, chunk, style=style, size=size, model=m,
                           run=jcv.Run(dtype=dtype))
    return compiled_flops(lowered.compile())


def jit_xla_flops(fn, *args) -> float | None:
    """XLA's FLOPs of ``jax.jit(fn)(*args)`` (compiled, not run)."""
    import jax

    return compiled_flops(jax.jit(fn).lower(*args).compile())
