"""Attribution: which input pixels drive a prediction.

In data order: ``_cam_common`` (checks, the explained score, the forward
and backward pass at a layer, normalisation, the backend seam),
``cam_registry`` (one :class:`~jaxconvviz.CamMethod` record per CAM
method), the families ``cam_gradient``, ``cam_eigen`` and
``cam_perturbation`` (one function and one record per method), ``cams``
(``jcv.cam``: the compiled program over any record), ``gradcam`` (the
Grad-CAM shortcut), ``gradients`` (input-space attributions), ``metrics``
(faithfulness and localization), ``explain`` (one dispatch over CAMs and
attributions, with their metrics) and ``sanity`` (randomization tests).

A new CAM method is one function and one record
(:func:`~jaxconvviz.register_cam_method`), in the family module it
belongs to -- or in your own code.
"""

__all__: list[str] = []  # the public names are re-exported by jaxconvviz
