"""Gradient clipping: the classic remedy for exploding gradients.

- `norm`: Pascanu, Mikolov & Bengio (2013), Algorithm 1: if ||g|| > threshold then
  g <- threshold * g / ||g||, with ||g|| the L2 norm over all parameters together.
- `value`: element-wise clipping to [-threshold, threshold] (Mikolov, 2012).
- `none`: the gradient unchanged (its norm is still reported).
"""

from __future__ import annotations

import numpy as np

CLIP_MODES = ("none", "norm", "value")


def global_norm(arrays: dict[str, np.ndarray]) -> float:
    """L2 norm over all arrays of a dict taken together."""
    return float(np.sqrt(sum(float(np.vdot(a, a)) for a in arrays.values())))


def clip_grads(grads: dict[str, np.ndarray], mode: str, threshold: float | None):
    """Clip a gradient dict; the input dict and its arrays are left untouched.

    Returns (clipped, info) with info = {"norm": pre-clip global norm, "clipped": bool}.
    """
    if mode not in CLIP_MODES:
        raise ValueError(f"unknown clip mode {mode!r}; valid choices: {', '.join(CLIP_MODES)}")
    if mode != "none" and (threshold is None or not np.isfinite(threshold) or threshold <= 0):
        raise ValueError(f"clip threshold must be a positive number for mode {mode!r}, got {threshold!r}")
    norm = global_norm(grads)
    if mode == "norm" and norm > threshold:
        factor = threshold / norm
        return {k: g * factor for k, g in grads.items()}, {"norm": norm, "clipped": True}
    if mode == "value":
        clipped = any(np.any(np.abs(g) > threshold) for g in grads.values())
        if clipped:
            return {k: np.clip(g, -threshold, threshold) for k, g in grads.items()}, {"norm": norm, "clipped": True}
    return dict(grads), {"norm": norm, "clipped": False}
