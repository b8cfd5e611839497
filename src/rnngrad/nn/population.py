"""Population statistics of the recurrent batch norm (Cooijmans et al. 2016), per time step.

Training normalizes each step with its batch's statistics; evaluation with the population's, so that a
sample's output does not depend on the other samples of its batch. Cooijmans et al. estimate them by
averaging the batch statistics over the training set; here they are exponential running
averages kept during training, one per time step (as batch-norm layers keep them, Ioffe & Szegedy 2015):

    mean_t <- (1 - momentum) mean_t + momentum batch_mean_t,   var_t likewise with B/(B-1) batch_var_t

the first batch that reaches step t setting its statistics outright. Steps beyond the longest trained
one, T_max, use the statistics of step T_max, as Cooijmans et al. do for test sequences longer than the
training ones.
"""

from __future__ import annotations

import numpy as np

from rnngrad.nn.spec import Cache


class Population:
    """Running averages of each step's batch statistics (T_max, 4, H): mean and variance of x_t U, then of
    s_{t-1} W. `update(cache)` after each training forward; `statistics(T)` for predict."""

    def __init__(self, momentum: float = 0.1):
        if not (isinstance(momentum, (int, float)) and 0 < momentum <= 1):
            raise ValueError(f"momentum must lie in (0, 1], got {momentum!r}")
        self.momentum = float(momentum)
        self.stats: np.ndarray | None = None  # (T_max, 4, H), float64
        self.counts = np.zeros(0, dtype=np.int64)  # (T_max,) the batches that have reached each step

    def update(self, cache: Cache) -> None:
        """Average in the batch statistics of a training forward (norm recurrent_batch)."""
        if cache.spec.norm != "recurrent_batch":
            raise ValueError(f"population statistics are for norm 'recurrent_batch', not {cache.spec.norm!r}")
        batch = np.array(cache["bn_stats"], dtype=np.float64)  # (T, 4, H), biased variances
        T, _, H = batch.shape
        B = cache["s"].shape[1]
        batch[:, 1::2] *= B / (B - 1)  # unbiased, as Ioffe & Szegedy's inference statistics
        if self.stats is None:
            self.stats = np.zeros((0, 4, H))
        if self.stats.shape[2] != H:
            raise ValueError(f"a model of {H} units cannot update the statistics of {self.stats.shape[2]} units")
        if T > self.stats.shape[0]:
            grown = np.zeros((T, 4, H))
            grown[: self.stats.shape[0]] = self.stats
            self.stats = grown
            self.counts = np.concatenate([self.counts, np.zeros(T - self.counts.size, dtype=np.int64)])
        seen = self.counts[:T] > 0
        m = self.momentum
        self.stats[:T][seen] = (1.0 - m) * self.stats[:T][seen] + m * batch[seen]
        self.stats[:T][~seen] = batch[~seen]
        self.counts[:T] += 1

    @property
    def length(self) -> int:
        """T_max, the longest trained length (0 before any update)."""
        return 0 if self.stats is None else self.stats.shape[0]

    def statistics(self, T: int) -> np.ndarray:
        """(T, 4, H): each step's population statistics, the steps from T_max on using step T_max's."""
        if self.stats is None:
            raise ValueError("no population statistics yet: update() them with a training forward first")
        steps = np.minimum(np.arange(T), self.stats.shape[0] - 1)
        return self.stats[steps]
