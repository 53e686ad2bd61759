"""Directions in activation space: activation atlases (Carter et al. 2019)
and activation factorization (Olah et al. 2018).

Compute only (jax, numpy; umap-learn and scikit-learn lazily, the optional
extra ``jaxconvviz[atlas]``).
"""

from jaxconvviz.directions.activation_atlas import ActivationAtlas, activation_atlas
from jaxconvviz.directions.factorize import Factorization, factorize_activations

__all__ = ["ActivationAtlas", "activation_atlas", "Factorization",
           "factorize_activations"]
