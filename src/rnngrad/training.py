"""The training loop: a plain function that knows nothing of Hydra or MLflow.

`train(settings, callbacks)` runs one experiment and reports everything it measures to its callbacks:

- `on_start(info)`: the task's facts (baseline, length, dependency distance, parameter count).
- `on_step(step, metrics)`: the scalar metrics of a step (`train/`, `grad/`, and on their intervals
  `eval/`, `spectral/`, `act/`, `lyap/`), finite values only: a diverging run never emits NaN or Inf.
- `on_through_time(step, arrays)`: arrays over t = 1..T: `ds_norm` (||dL/ds_t||) every step; on the
  diagnostic interval also `jac_norm` (||ds_T/ds_t|| on a probe sequence) and `bound` (Pascanu et al.).
- `on_end(result)`: the outcome.

Step 0 measures the freshly initialized model; every step s >= 1 is measured after s updates.
`steps=0` therefore measures the model at initialization only.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from rnngrad import core, diagnostics
from rnngrad.clip import clip_grads, global_norm
from rnngrad.losses import make_loss
from rnngrad.optim import make_optimizer
from rnngrad.tasks import make_task

BPTT_MODES = ("window", "chunked")
DIVERGENCE_UPDATE_NORM = 1e10  # an applied update larger than this counts as divergence
EVAL_BATCH = 256  # test sequences per forward pass during evaluation (bounds memory)


@dataclass
class Settings:
    """Everything one run needs. Validation happens where each value is used (core, tasks, optim, clip)."""

    task: str = "adding"
    seq_len: int = 50
    task_options: dict = field(default_factory=dict)
    cell: str = "rnn"
    norm: str = "none"
    activation: str = "tanh"
    hidden_size: int = 64
    init: str = "orthogonal"
    spectral_radius: float | None = None
    scale: float = 1.0
    forget_bias: float = 1.0
    dtype: str = "float64"
    optimizer: str = "adam"
    lr: float = 1e-3
    optimizer_options: dict = field(default_factory=dict)
    clip_mode: str = "none"
    clip_threshold: float | None = 1.0
    truncation: int | None = None
    bptt_mode: str = "window"
    steps: int = 1000
    batch_size: int = 32
    eval_interval: int = 100
    diag_interval: int = 100  # the instruments stay under 10% of a step (scripts/bench.py)
    stop_when_solved: bool = False
    lyapunov_k: int = 1
    seed: int = 0
    verbose: bool = True


@dataclass
class Result:
    outcome: str  # solved | unsolved | diverged
    steps_done: int
    solved_at: int | None = None
    diverged_at: int | None = None
    diverged_reason: str | None = None
    final: dict = field(default_factory=dict)  # the last finite value of every metric
    grad_norm_peak: float = float("nan")  # the largest global gradient norm before clipping, over every step
    baseline: float = float("nan")
    wall_time: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class Callback:
    """Subscribe to a run by overriding any of these."""

    def on_start(self, info: dict) -> None: ...

    def on_step(self, step: int, metrics: dict[str, float]) -> None: ...

    def on_through_time(self, step: int, arrays: dict[str, np.ndarray]) -> None: ...

    def on_end(self, result: Result) -> None: ...


class ProgressPrinter(Callback):
    """One line per evaluation, for interactive runs."""

    def on_step(self, step, metrics):
        if "eval/loss" in metrics:
            fields = [f"step {step:6d}", f"loss {metrics.get('train/loss', float('nan')):.4g}"]
            fields.append(f"eval {metrics['eval/loss']:.4g}")
            fields.append(f"acc {metrics.get('eval/accuracy', float('nan')):.3f}")
            fields.append(f"|g| {metrics.get('grad/norm', float('nan')):.3g}")
            fields.append(f"decay {metrics.get('grad/decay_rate', float('nan')):+.4f}")
            print("  ".join(fields), flush=True)

    def on_end(self, result):
        where = {"solved": result.solved_at, "diverged": result.diverged_at}.get(result.outcome)
        print(f"outcome {result.outcome}" + (f" at step {where}" if where is not None else ""), flush=True)


class Diverged(Exception):
    """Raised inside the loop when the run leaves the finite world; caught by `train`."""


def validate(st: Settings):
    """Check every setting before any work is done; returns the task. Raises ValueError naming the valid choices."""
    for name in ("steps", "batch_size", "eval_interval", "diag_interval"):
        value = getattr(st, name)
        minimum = 0 if name == "steps" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if st.bptt_mode not in BPTT_MODES:
        raise ValueError(f"unknown bptt mode {st.bptt_mode!r}; valid choices: {', '.join(BPTT_MODES)}")
    if st.bptt_mode == "chunked" and (st.truncation is None or st.task != "char_lm"):
        raise ValueError("chunked BPTT runs on a text stream with a chunk length: task char_lm and an integer truncation")
    if st.dtype not in ("float64", "float32"):
        raise ValueError(f"unknown dtype {st.dtype!r}; valid choices: float64, float32")
    if st.cell != "rnn" or st.norm != "none":
        core.check_cell(st.cell, st.norm)
        if st.norm == "batch" and st.batch_size < 2:
            raise ValueError("norm 'batch' needs batch_size >= 2 (batch statistics)")
    core.check_activation(st.activation)
    core.check_truncation(st.truncation)
    make_optimizer(st.optimizer, st.lr, **st.optimizer_options)
    clip_grads({}, st.clip_mode, st.clip_threshold)
    return make_task(st.task, seq_len=st.seq_len, **st.task_options)


def _cosine(a: dict, b: dict) -> float:
    dot = sum(float(np.vdot(a[k], b[k])) for k in a)
    denom = global_norm(a) * global_norm(b)
    return dot / denom if denom > 0 else float("nan")


def _finite(metrics: dict) -> dict:
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(v)}


def train(settings: Settings, callbacks: list[Callback] = ()) -> Result:
    """Run one experiment; see the module docstring for what the callbacks receive."""
    st = settings
    task = validate(st)
    callbacks = list(callbacks) + ([ProgressPrinter()] if st.verbose else [])
    dtype = np.dtype(st.dtype)
    t_start = time.perf_counter()

    # all seeding happens here: one stream each for init, data and the diagnostics' own randomness
    init_rng, data_rng, diag_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(st.seed).spawn(3))
    loss_fn = make_loss(task.loss)
    params = core.init_params(
        task.input_size, st.hidden_size, task.output_size, init=st.init,
        spectral_radius=st.spectral_radius, scale=st.scale, rng=init_rng, dtype=dtype,
        cell=st.cell, norm=st.norm, forget_bias=st.forget_bias,
    )
    model = {"activation": st.activation, "cell": st.cell, "norm": st.norm}
    plain_rnn = st.cell == "rnn" and st.norm == "none"  # the Pascanu bound is stated for this model
    square_W = params["W"].shape[0] == params["W"].shape[1]
    optimizer = make_optimizer(st.optimizer, st.lr, **st.optimizer_options)

    test_x, test_y, test_mask = task.test_set()
    test_x = test_x.astype(dtype)
    # fixed test sequences for the Jacobian and Lyapunov instruments; sample 0 is measured, the second
    # gives batch normalization its statistics
    probe_x = test_x[:, :2]
    stream = task.stream(st.batch_size, data_rng) if st.bptt_mode == "chunked" else None
    h_carry = None
    # the training step's big arrays are allocated once; nothing below keeps them past the step
    workspace = core.Workspace()

    info = {
        "task": task.name, "length": task.length, "dependency": task.dependency,
        "baseline": task.baseline, "loss": task.loss,
        "n_params": int(sum(p.size for p in params.values())),
    }
    for cb in callbacks:
        cb.on_start(info)

    def evaluate() -> dict:
        total, acc_total, n = 0.0, 0.0, test_x.shape[1]
        # equal chunks, none smaller than the others (batch normalization needs a batch)
        for idx in np.array_split(np.arange(n), -(-n // EVAL_BATCH)):
            sl = slice(idx[0], idx[-1] + 1)
            out, _ = core.forward(params, test_x[:, sl], **model)
            if not np.all(np.isfinite(out)):
                raise Diverged("non-finite output on the test set")
            loss, _ = loss_fn(out.astype(np.float64), test_y[:, sl], test_mask[:, sl])
            weight = test_x[:, sl].shape[1] / n
            total += loss * weight
            acc_total += task.accuracy(out.astype(np.float64), test_y[:, sl], test_mask[:, sl]) * weight
        metrics = {"eval/loss": total, "eval/accuracy": acc_total}
        if task.name == "char_lm":
            metrics["eval/bpc"] = total / math.log(2)
        return metrics

    def measure(grads: dict, cache: dict, ds: np.ndarray, dout: np.ndarray) -> tuple[dict, dict]:
        """The diagnostic-interval instruments; through-time arrays go to the callbacks."""
        out = {"act/saturation": diagnostics.saturation(cache, st.activation)}
        if square_W:  # the recurrent matrix of the vanilla RNN (with or without normalization)
            out["spectral/radius"] = diagnostics.spectral_radius(params["W"])
            out["spectral/sigma_max"] = diagnostics.sigma_max(params["W"])
        _, probe_cache = core.forward(params, probe_x, **model)
        jac = diagnostics.jacobian_norms(params, probe_cache, st.activation)
        with np.errstate(all="ignore"):
            lyap = diagnostics.lyapunov_exponents(params, probe_x, st.activation, st.lyapunov_k,
                                                  cell=st.cell, norm=st.norm, rng=diag_rng, cache=probe_cache)
        out["lyap/top"] = float(lyap[0])
        if st.truncation is not None and st.bptt_mode == "window":
            full, _ = core.backward(params, cache, dout)
            out["grad/trunc_cosine"] = _cosine(grads, full)
        arrays = through_time(ds, cache)
        if jac.shape[0] == ds.shape[0]:  # the probe has the batch's length (not so for chunked BPTT)
            arrays["jac_norm"] = jac
            if plain_rnn:
                arrays["bound"] = diagnostics.pascanu_bound(params, st.activation, probe_x.shape[0])
        return out, arrays

    def through_time(ds: np.ndarray, cache: dict) -> dict:
        arrays = {"ds_norm": diagnostics.grad_norms_through_time(ds)}
        if "dc" in cache:  # the LSTM's cell-state path, the mechanism of the remedy
            arrays["dc_norm"] = diagnostics.grad_norms_through_time(cache["dc"])
        return arrays

    final: dict[str, float] = {}
    outcome, solved_at, diverged_at, reason = "unsolved", None, None, None
    grad_norm_peak = float("nan")  # over every step, whether or not a logger keeps that step
    step = 0
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            for step in range(st.steps + 1):
                if stream is not None:
                    x, y, mask = stream.next_chunk(st.truncation)
                    h0 = h_carry
                else:
                    x, y, mask = task.sample(st.batch_size, data_rng)
                    h0 = None
                x = x.astype(dtype)
                out, cache = core.forward(params, x, **model, h0=h0, workspace=workspace)
                loss, dout = loss_fn(out.astype(np.float64), y, mask)
                if not math.isfinite(loss):
                    raise Diverged("non-finite training loss")
                window = None if st.bptt_mode == "chunked" else st.truncation
                grads, ds = core.backward(params, cache, dout.astype(dtype), truncation=window, workspace=workspace)
                if stream is not None:  # the state crosses chunks, the gradient does not
                    h_carry = cache["s"][-1].copy()
                    if st.cell == "lstm":
                        h_carry = (h_carry, cache["c"][-1].copy())
                arrays = through_time(ds, cache)
                ds_norm = arrays["ds_norm"]
                metrics = {
                    "train/loss": loss,
                    "grad/ds_first": float(ds_norm[0]),
                    "grad/ds_last": float(ds_norm[-1]),
                    "grad/decay_rate": diagnostics.decay_rate(ds_norm),
                }
                if "dc_norm" in arrays:
                    metrics["grad/dc_first"] = float(arrays["dc_norm"][0])
                    metrics["grad/dc_last"] = float(arrays["dc_norm"][-1])
                    metrics["grad/dc_decay_rate"] = diagnostics.decay_rate(arrays["dc_norm"])
                clipped, clip_info = clip_grads(grads, st.clip_mode, st.clip_threshold)
                metrics["grad/norm"] = clip_info["norm"]
                metrics["grad/clipped"] = float(clip_info["clipped"])
                if not math.isfinite(clip_info["norm"]):
                    raise Diverged("non-finite gradient")
                if not grad_norm_peak >= clip_info["norm"]:  # NaN at the start compares False
                    grad_norm_peak = clip_info["norm"]
                if step % st.diag_interval == 0 or step == st.steps:
                    diag, arrays = measure(grads, cache, ds, dout)
                    metrics.update(diag)
                if step % st.eval_interval == 0 or step == st.steps:
                    metrics.update(evaluate())
                    if solved_at is None and task.is_solved(metrics["eval/loss"], metrics["eval/accuracy"]):
                        solved_at = step
                metrics = _finite(metrics)
                final.update(metrics)
                for cb in callbacks:
                    cb.on_step(step, metrics)
                    cb.on_through_time(step, arrays)
                if step == st.steps or (solved_at is not None and st.stop_when_solved):
                    break
                update_norm = optimizer.step(params, clipped)
                if not math.isfinite(update_norm) or update_norm > DIVERGENCE_UPDATE_NORM:
                    raise Diverged(f"update norm {update_norm:.3g} above {DIVERGENCE_UPDATE_NORM:.0e}")
                if not all(np.all(np.isfinite(p)) for p in params.values()):
                    raise Diverged("non-finite parameters")
        if solved_at is not None:
            outcome = "solved"
    except Diverged as err:
        outcome, diverged_at, reason = "diverged", step, str(err)

    result = Result(
        outcome=outcome, steps_done=step, solved_at=solved_at, diverged_at=diverged_at,
        diverged_reason=reason, final=final, grad_norm_peak=grad_norm_peak, baseline=float(task.baseline),
        wall_time=time.perf_counter() - t_start,
    )
    for cb in callbacks:
        cb.on_end(result)
    return result
