"""Sequence losses over time-major batches, each returning (loss, dout).

A loss is the mean over the masked (t, b) pairs, so its scale does not depend on how many steps
carry a target. `dout` is the exact gradient of the returned loss with respect to `out`; it is zero
on masked-out steps, which is what lets the backward pass treat every step alike. Both are computed
on the steps that carry loss only (`loss_steps`): for adding and temporal order, the last one.
"""
import numpy as np


def check_batch(out, y, mask, loss):
    """Validate the arrays of one batch; raise ValueError on a mismatch.

    Inputs:
    - out: (T, B, O) float model outputs (raw scores for 'xent')
    - y: (T, B, O) float targets for 'mse'; (T, B) integer class ids in [0, O) for 'xent'
    - mask: (T, B) weights, 1 on the steps that carry loss; needs a positive entry
    - loss: 'mse' or 'xent'
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; valid names: {', '.join(LOSSES)}")
    if out.ndim != 3:
        raise ValueError(f"out must be (T, B, O), got shape {out.shape}")
    if mask.shape != out.shape[:2]:
        raise ValueError(f"mask must be (T, B) = {out.shape[:2]}, got shape {mask.shape}")
    if loss == "mse" and y.shape != out.shape:
        raise ValueError(f"mse targets must have the shape of out {out.shape}, got {y.shape}")
    if loss == "xent":
        if y.shape != out.shape[:2] or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"xent targets must be (T, B) = {out.shape[:2]} integer ids, "
                             f"got {y.dtype} of shape {y.shape}")
        if y.min() < 0 or y.max() >= out.shape[2]:
            raise ValueError(f"class ids must lie in [0, {out.shape[2]}), got [{y.min()}, {y.max()}]")
    if not (mask > 0).any():
        raise ValueError("mask has no positive entry: no step carries loss")


def loss_steps(mask):
    """The steps of a (T, B) mask that carry loss: slice(None) when all do, else their indices."""
    steps = np.flatnonzero(np.any(mask != 0, axis=1))
    return slice(None) if steps.size == mask.shape[0] else steps


def _total(terms, steps, shape):
    """The sum of the terms at `steps` (loss_steps) as the sum of a `shape` array that is zero elsewhere:
    numpy's pairwise summation then groups them as it would over all steps, so the loss is bit for bit
    the one computed everywhere (summing the few nonzero terms alone could round differently)."""
    if isinstance(steps, slice):
        return np.sum(terms)
    full = np.zeros(shape)
    full[steps] = terms
    return np.sum(full)


def mse(out, y, mask):
    """Mean squared error over the masked elements.

    Inputs:
    - out: (T, B, O) predictions
    - y: (T, B, O) targets
    - mask: (T, B) 0/1, the steps that carry loss

    Returns (loss, dout): loss = sum_tb mask_tb sum_o (out - y)^2 / (O sum_tb mask_tb), a float;
    dout: (T, B, O).
    """
    check_batch(out, y, mask, "mse")
    steps = loss_steps(mask)
    out_s, y_s, mask_s = out[steps], y[steps], mask[steps]
    scale = out.shape[2] * mask.sum()
    diff = (out_s - y_s) * mask_s[..., None]
    loss = _total(diff * (out_s - y_s), steps, out.shape) / scale
    dout = np.zeros_like(out)
    dout[steps] = 2.0 * diff / scale
    return float(loss), dout


def softmax_xent(out, y, mask):
    """Softmax cross-entropy (nats) averaged over the masked steps.

    Inputs:
    - out: (T, B, O) raw scores (logits)
    - y: (T, B) integer class ids
    - mask: (T, B) 0/1, the steps that carry loss

    Returns (loss, dout): loss = -sum_tb mask_tb log softmax(out_tb)[y_tb] / sum_tb mask_tb, a float;
    dout: (T, B, O) = mask (softmax(out) - onehot(y)) / sum(mask).
    """
    check_batch(out, y, mask, "xent")
    steps = loss_steps(mask)
    T, B, O = out.shape
    # the rows (t, b) of the steps that carry loss, one per row of a 2-d array
    logits, target, weight = out[steps].reshape(-1, O), y[steps].reshape(-1), mask[steps].reshape(-1)
    rows = np.arange(target.size)
    # log-sum-exp around the row maximum: exp never overflows, even for logits of 1e4
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    count = mask.sum()
    loss = -_total((weight * log_probs[rows, target]).reshape(-1, B), steps, mask.shape) / count
    probs = np.exp(log_probs)
    probs[rows, target] -= 1.0
    probs *= (weight / count)[:, None]
    dout = np.zeros_like(out)
    dout[steps] = probs.reshape(-1, B, O)
    return float(loss), dout


LOSSES = {"mse": mse, "xent": softmax_xent}


def make_loss(name):
    """The loss function called `name` ('mse' or 'xent'), with signature (out, y, mask) -> (loss, dout)."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(LOSSES)}")
    return LOSSES[name]
