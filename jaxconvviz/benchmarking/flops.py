"""FLOP counts: the analytic convolution count (checked by hand in the tests)
and XLA's cost analysis of the compiled programs the library runs.

XLA's ``cost_analysis()`` of a program with a ``while`` loop (``lax.fori_loop``)
counts the loop body once, whatever the trip count (measured: the same count
for 1 and 4 steps). The ascent's count is therefore taken from the one-step
program (:func:`ascent_step_xla_flops`) times the steps, never from the
fori-loop program.
"""

from __future__ import annotations

__all__ = ["ascent_flops", "ascent_step_xla_flops", "compiled_flops", "conv_macs",
           "forward_flops", "jit_xla_flops"]


def conv_macs(model, layer: str, size: int, channel_only: bool = False) -> int:
    """Forward multiply-adds of one ``size`` px image through the convolutions
    up to ``layer`` (``channel_only``: ``layer`` with one output channel); the
    library's :func:`jaxconvviz.featureviz.filters.conv_macs`."""
    from jaxconvviz.benchmarking.cases import engine

    return engine("conv_macs")(model, layer, size, channel_only=channel_only)


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
                          dtype: str = "float32", channel_only: bool = False,
                          conv_impl: str = "auto") -> float | None:
    """XLA's FLOPs of ONE ascent step of a chunk of ``chunk`` filters, as the
    library compiles it.

    :func:`jaxconvviz.filter_patterns` (``loop="python"``, one chunk, the
    first local device) is jitted whole for 2 steps and for 1 step; the
    difference of the two compiled programs' counts is one step (the start
    images' random numbers cancel). Only public API is used, so the count
    follows the library's program as it changes. Multiply by steps and
    chunks for a whole request.
    """
    import jax
    import jax.numpy as jnp

    import jaxconvviz as jcv

    dev = jax.local_devices()[0]
    key = jax.random.key(0)

    def count(steps: int) -> float | None:
        def fn(p):
            return jcv.filter_patterns(
                p, layer, range(chunk), key=key, steps=steps, size=size,
                loop="python", batch_size=chunk, model=model,
                dtype=getattr(jnp, dtype), channel_only=channel_only,
                conv_impl=conv_impl, devices=[dev])

        return jit_xla_flops(fn, params)

    one, two = count(1), count(2)
    if one is None or two is None:
        return None
    return two - one


def jit_xla_flops(fn, *args) -> float | None:
    """XLA's FLOPs of ``jax.jit(fn)(*args)`` (compiled, not run)."""
    import jax

    return compiled_flops(jax.jit(fn).lower(*args).compile())
