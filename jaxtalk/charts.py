"""Moved to `jaxtalk.plot` (one module for every figure); these names are forwarded from there."""

from jaxtalk._moved import forward

__getattr__ = forward(__name__, "jaxtalk.plot", ("PALETTE", "Canvas", "smooth", "loss_curves", "image_strip"))
