"""Initialization of the weights, for every cell: the gated cells draw each gate's block as the vanilla
RNN draws its U and W.

Row-vector convention: U (D, H) input -> hidden, W (H, H) hidden -> hidden, V (H, O) hidden -> output.
"""

from __future__ import annotations

import numpy as np

INITS = ("gaussian", "xavier", "he", "orthogonal", "identity", "sparse", "normal")

SPARSE_NONZEROS = 15  # nonzeros per row of W for the "sparse" init (Pascanu et al. 2013, Sec. 4.3)


def orthogonal(n: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-random orthogonal matrix (QR of a Gaussian with the sign of diag(R) fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def recurrent(H: int, init: str, scale: float, rng: np.random.Generator) -> np.ndarray:
    """W (H, H) drawn by `init` (see init_params)."""
    if init == "gaussian":
        return rng.normal(0.0, scale / np.sqrt(H), size=(H, H))
    if init == "normal":  # N(0, scale^2) whatever H: Pascanu et al.'s "sigmoid" (0.01) and "basic tanh" (0.1)
        return rng.normal(0.0, scale, size=(H, H))
    if init == "xavier":  # Glorot & Bengio (2010), uniform, fan_in = fan_out = H
        limit = scale * np.sqrt(6.0 / (H + H))
        return rng.uniform(-limit, limit, size=(H, H))
    if init == "he":  # He et al. (2015): variance 2 / fan_in
        return rng.normal(0.0, scale * np.sqrt(2.0 / H), size=(H, H))
    if init == "orthogonal":  # Saxe et al. (2014)
        return scale * orthogonal(H, rng)
    if init == "identity":  # IRNN, Le et al. (2015)
        return scale * np.eye(H)
    if init == "sparse":
        # Pascanu et al. (2013): a fixed number of nonzeros per row; their variance makes each
        # row's squared norm ~ scale^2, so rho ~ scale as for the Gaussian init. Their "smart tanh"
        # (pascanur/trainingRNNs) keeps 15 entries of each row of an N(0, 0.01^2) matrix, chosen by a
        # permutation, and rescales W to rho = 0.95: with spectral_radius=0.95 this is the same
        # distribution (rows of W are a unit's outgoing weights, s_{t-1} W, in both).
        k = min(SPARSE_NONZEROS, H)
        W = np.zeros((H, H))
        for i in range(H):
            cols = rng.choice(H, size=k, replace=False)
            W[i, cols] = rng.normal(0.0, scale / np.sqrt(k), size=k)
        return W
    raise ValueError(f"unknown init {init!r}; valid choices: {', '.join(INITS)}")


def rescale_spectral_radius(W: np.ndarray, spectral_radius: float, init: str) -> np.ndarray:
    """Scale W (H, H) in place so that max |eig(W)| = spectral_radius exactly; returns W."""
    rho = np.max(np.abs(np.linalg.eigvals(W)))
    if rho == 0:
        raise ValueError(f"cannot rescale W to spectral radius {spectral_radius}: init {init!r} gave rho = 0")
    W *= spectral_radius / rho
    return W


def check_init(init: str, scale: float, spectral_radius: float | None, io_std: float | None = None) -> None:
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; valid choices: {', '.join(INITS)}")
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    if spectral_radius is not None and (not np.isfinite(spectral_radius) or spectral_radius <= 0):
        raise ValueError(f"spectral_radius must be a positive number or None, got {spectral_radius!r}")
    if io_std is not None and (not np.isfinite(io_std) or io_std <= 0):
        raise ValueError(f"io_std must be a positive number or None, got {io_std!r}")


IDENTITY_IO_STD = 1e-3  # the IRNN's input and output weights: N(0, 0.001^2), Le, Jaitly & Hinton (2015)


def draw(D: int, H: int, O: int, init: str, spectral_radius: float | None, scale: float, rng: np.random.Generator,
         dtype, io_std: float | None = None) -> dict[str, np.ndarray]:
    """The weights of a vanilla RNN: {"U": (D, H), "W": (H, H), "b": (H,), "V": (H, O), "c": (O,)}.

    `init` chooses W: gaussian N(0, scale^2/H); normal N(0, scale^2); xavier (Glorot uniform) times scale;
    he N(0, 2 scale^2/H); orthogonal times scale; identity (IRNN: W = scale * I); sparse (15 nonzeros per
    row, rho ~ scale). U and V are N(0, io_std^2) when io_std is given; else Glorot-normal, except for
    identity, where they are N(0, 0.001^2) as in Le et al. (2015).
    Biases start at zero. `spectral_radius=r` rescales W afterwards so that max |eig(W)| = r exactly.
    Drawn in this order: W, U, V.
    """
    W = recurrent(H, init, scale, rng)
    if spectral_radius is not None:
        rescale_spectral_radius(W, spectral_radius, init)
    if io_std is None and init == "identity":
        io_std = IDENTITY_IO_STD
    if io_std is not None:
        U = rng.normal(0.0, io_std, size=(D, H))
        V = rng.normal(0.0, io_std, size=(H, O))
    else:
        U = rng.normal(0.0, np.sqrt(2.0 / (D + H)), size=(D, H))
        V = rng.normal(0.0, np.sqrt(2.0 / (H + O)), size=(H, O))
    params = {"U": U, "W": W, "b": np.zeros(H), "V": V, "c": np.zeros(O)}
    return {k: np.ascontiguousarray(v, dtype=dtype) for k, v in params.items()}


def gate_blocks(drawn: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """n draws as the weights of n gates: U (D, nH) and W (H, nH) side by side, b (nH,) zero, and the first
    draw's V and c (so that n gates take the random stream of n independent vanilla RNNs)."""
    params = drawn[0]
    if len(drawn) > 1:
        params["U"] = np.hstack([block["U"] for block in drawn])
        params["W"] = np.hstack([block["W"] for block in drawn])
        params["b"] = np.zeros(params["W"].shape[1], dtype=params["W"].dtype)
    return params
