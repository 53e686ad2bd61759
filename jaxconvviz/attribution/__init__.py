"""Attribution: which input pixels drive a prediction.

Grad-CAM, the CAM family and gradient methods.
"""
