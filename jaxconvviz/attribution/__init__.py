"""Attribution: which input pixels drive a prediction.

Grad-CAM, the CAM family and gradient methods.
"""

__all__: list[str] = []  # the public names are re-exported by jaxconvviz
