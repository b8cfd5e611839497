"""The training loop: a plain function that knows nothing of Hydra or MLflow.

`train(run, callbacks)` runs one experiment and reports everything it measures to its callbacks.
`run` is the validated configuration (`rnngrad.config.checked`: the schema object with `task`,
`model`, `optim`, `clip`, `bptt`, `train` and `seed`); the loop restates none of its defaults.

- `on_start(info)`: the task's facts (baseline, length, dependency distance, parameter count).
- `on_step(step, metrics)`: the scalar metrics of a step (`train/`, `grad/`, and on their intervals
  `eval/`, `spectral/`, `act/`, `lyap/`), finite values only: a diverging run never emits NaN or Inf.
- `on_through_time(step, arrays)`: arrays over t = 1..T: `ds_norm` (||dL/ds_t||) every step; on the
  diagnostic interval also `jac_norm` (||ds_T/ds_t|| on a probe sequence) and `bound` (Pascanu et al.).
- `on_end(result)`: the outcome.

With `train.omega_alpha` > 0 the update follows the loss gradient plus alpha dOmega/dW (Pascanu et al.'s
regularizer, nn.omega), clipped together as in their code; `train/omega` is logged every step then, and on
the diagnostic steps of any vanilla RNN. With Cooijmans et al.'s batch norm (model.norm=batch,
model.bn_variant=cooijmans) every training forward updates the population statistics that evaluation uses.

Step 0 measures the freshly initialized model; every step s >= 1 is measured after s updates.
`train.steps=0` therefore measures the model at initialization only.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from rnngrad import diagnostics
from rnngrad.clip import clip_grads, global_norm
from rnngrad.losses import make_loss
from rnngrad.nn import model as nn
from rnngrad.optim import make_optimizer, option_names
from rnngrad.tasks import Task, make_task

BPTT_MODES = ("window", "chunked")
DIVERGENCE_UPDATE_NORM = 1e10  # an applied update larger than this counts as divergence
EVAL_BATCH = 256  # test sequences per forward pass during evaluation (bounds memory)


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


def make_run_task(run) -> Task:
    """The task a run trains on (its constructor checks the task's own options)."""
    options = dict(run.task.options)
    if run.task.min_seq_len is not None:  # an option of the tasks that take it (adding, temporal_order)
        options["min_seq_len"] = run.task.min_seq_len
    return make_task(str(run.task.name), seq_len=run.task.seq_len, test_size=run.task.test_size, **options)


def make_run_optimizer(run):
    """The run's optimizer (its constructor checks its own options, e.g. momentum in (0, 1))."""
    # the configuration holds every optimizer's fields: pass the ones this optimizer takes
    options = {key: getattr(run.optim, key) for key in option_names(run.optim.name)}
    return make_optimizer(run.optim.name, run.optim.lr, **options)


def _cosine(a: dict, b: dict) -> float:
    dot = sum(float(np.vdot(a[k], b[k])) for k in a)
    denom = global_norm(a) * global_norm(b)
    return dot / denom if denom > 0 else float("nan")


def _finite(metrics: dict) -> dict:
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(v)}


def _through_time(ds: np.ndarray, cache) -> dict:
    """ds_norm (T,) and, for the LSTM, the norms of its cell-state path dc (the mechanism of the remedy)."""
    arrays = {"ds_norm": diagnostics.grad_norms_through_time(ds)}
    if "dc" in cache:  # the LSTM's dL/dc_t, set by its backward
        arrays["dc_norm"] = diagnostics.grad_norms_through_time(cache["dc"])
    return arrays


def _gradient_metrics(loss: float, arrays: dict) -> dict:
    """The every-step scalars of the gradient through time."""
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
    return metrics


class _Loop:
    """One run's state: the model, the data, the instruments. `train` drives it step by step."""

    def __init__(self, run, task: Task):
        self.run, self.task = run, task
        m = run.model
        self.dtype = np.dtype(m.dtype)
        # all seeding happens here: one stream each for init, data and the diagnostics' own randomness
        init_rng, self.data_rng, self.diag_rng = (
            np.random.default_rng(s) for s in np.random.SeedSequence(run.seed).spawn(3))
        self.loss_fn = make_loss(task.loss)
        norm = nn.model_norm(m.norm, m.bn_variant)  # the model's name for the configured batch-norm variant
        self.params = nn.init_params(
            task.input_size, m.hidden_size, task.output_size, init=m.init, spectral_radius=m.spectral_radius,
            scale=m.scale, rng=init_rng, dtype=self.dtype, cell=m.cell, norm=norm, forget_bias=m.forget_bias,
            io_std=m.io_std, bn_gain=m.bn_gain,
        )
        self.model = {"activation": m.activation, "cell": m.cell, "norm": norm}
        self.plain_rnn = m.cell == "rnn" and m.norm == "none"  # the Pascanu bound is stated for this model
        # Cooijmans et al.'s batch norm evaluates with population statistics, averaged over the training batches
        self.population = nn.Population(m.bn_momentum) if self.model["norm"] == "recurrent_batch" else None
        self.omega_alpha = run.train.omega_alpha
        self.square_W = self.params["W"].shape[0] == self.params["W"].shape[1]
        self.optimizer = make_run_optimizer(run)
        test_x, self.test_y, self.test_mask = task.test_set()
        self.test_x = test_x.astype(self.dtype)
        # fixed test sequences for the Jacobian and Lyapunov instruments; sample 0 is measured, the second
        # gives batch normalization its statistics
        self.probe_x = self.test_x[:, :2]
        self.chunked = run.bptt.mode == "chunked"
        self.stream = task.stream(run.train.batch_size, self.data_rng) if self.chunked else None
        self.h_carry = None
        # the training step's big arrays are allocated once; nothing below keeps them past the step
        self.workspace = nn.Workspace()
        self.eval_workspace = nn.Workspace()  # evaluation's own: the step's cache stays valid meanwhile

    def info(self) -> dict:
        task = self.task
        # relevant: '20-24,40-44', each relevant input's distances from its loss (the report's truncation bands)
        relevant = ",".join(f"{near}-{far}" for near, far in task.relevant)
        return {"task": task.name, "length": task.length, "dependency": task.dependency, "relevant": relevant,
                "baseline": task.baseline, "loss": task.loss, "n_params": int(sum(p.size for p in self.params.values()))}

    def evaluate(self) -> dict:
        total, acc_total, n = 0.0, 0.0, self.test_x.shape[1]
        # equal chunks, none smaller than the others (batch normalization needs a batch)
        for idx in np.array_split(np.arange(n), -(-n // EVAL_BATCH)):
            sl = slice(idx[0], idx[-1] + 1)
            out = nn.predict(self.params, self.test_x[:, sl], **self.model, workspace=self.eval_workspace,
                             population=self.population)
            if not np.all(np.isfinite(out)):
                raise Diverged("non-finite output on the test set")
            out = out.astype(np.float64, copy=False)
            loss, _ = self.loss_fn(out, self.test_y[:, sl], self.test_mask[:, sl])
            weight = self.test_x[:, sl].shape[1] / n
            total += loss * weight
            acc_total += self.task.accuracy(out, self.test_y[:, sl], self.test_mask[:, sl]) * weight
        metrics = {"eval/loss": total, "eval/accuracy": acc_total}
        if self.task.name == "char_lm":
            metrics["eval/bpc"] = total / math.log(2)
        return metrics

    def measure(self, grads: dict, cache, ds: np.ndarray, dout: np.ndarray) -> tuple[dict, dict]:
        """The diagnostic-interval instruments; through-time arrays go to the callbacks."""
        run, params = self.run, self.params
        activation = run.model.activation
        out = {"act/saturation": diagnostics.saturation(cache, activation)}
        if self.square_W:  # the recurrent matrix of the vanilla RNN (with or without normalization)
            out["spectral/radius"] = diagnostics.spectral_radius(params["W"])
            out["spectral/sigma_max"] = diagnostics.sigma_max(params["W"])
        _, probe_cache = nn.forward(params, self.probe_x, **self.model)
        jac = diagnostics.jacobian_norms(params, probe_cache, activation)
        with np.errstate(all="ignore"):
            lyap = diagnostics.lyapunov_exponents(params, self.probe_x, activation, run.train.lyapunov_k,
                                                  cell=run.model.cell, norm=self.model["norm"], rng=self.diag_rng,
                                                  cache=probe_cache)
        out["lyap/top"] = float(lyap[0])
        if run.bptt.truncation is not None and not self.chunked:
            full, _ = nn.backward(params, cache, dout)
            out["grad/trunc_cosine"] = _cosine(grads, full)
        arrays = _through_time(ds, cache)
        if jac.shape[0] == ds.shape[0]:  # the probe has the batch's length (not so for chunked BPTT)
            arrays["jac_norm"] = jac
            if self.plain_rnn:
                arrays["bound"] = diagnostics.pascanu_bound(params, activation, self.probe_x.shape[0])
        return out, arrays

    def gradient(self):
        """Sample a batch, run forward and backward: (loss, grads, cache, ds, dout)."""
        if self.stream is not None:
            x, y, mask = self.stream.next_chunk(self.run.bptt.truncation)
            h0 = self.h_carry
        else:
            x, y, mask = self.task.sample(self.run.train.batch_size, self.data_rng)
            h0 = None
        x = x.astype(self.dtype, copy=False)
        out, cache = nn.forward(self.params, x, **self.model, h0=h0, workspace=self.workspace)
        if self.population is not None:
            self.population.update(cache)
        loss, dout = self.loss_fn(out.astype(np.float64, copy=False), y, mask)
        if not math.isfinite(loss):
            raise Diverged("non-finite training loss")
        window = None if self.chunked else self.run.bptt.truncation
        grads, ds = nn.backward(self.params, cache, dout.astype(self.dtype, copy=False), truncation=window,
                                workspace=self.workspace)
        if self.stream is not None:  # the state crosses chunks, the gradient does not
            h = cache["s"][-1].copy()
            self.h_carry = (h, cache["c"][-1].copy()) if self.run.model.cell == "lstm" else h
        return loss, grads, cache, ds, dout

    def regularize(self, grads: dict, cache, ds: np.ndarray, diagnostic: bool) -> tuple[dict, dict]:
        """The gradient the update follows and {"train/omega": Omega} (nn.omega, Pascanu et al. 2013).

        With train.omega_alpha > 0: grads with alpha dOmega/dW added to W's (a new dict; grads stays the
        loss's own, for the instruments), Omega measured every step. Otherwise grads itself, and Omega
        measured on the diagnostic steps of a vanilla RNN only.
        """
        if self.omega_alpha > 0:
            value, dW = nn.omega(self.params, cache, ds)
            return {**grads, "W": grads["W"] + self.omega_alpha * dW}, {"train/omega": value}
        if diagnostic and self.plain_rnn:
            return grads, {"train/omega": nn.omega(self.params, cache, ds)[0]}
        return grads, {}

    def update(self, clipped: dict) -> None:
        # this check also keeps the parameters finite: a finite update of norm <= 1e10 cannot take a finite
        # parameter to inf (near the largest float, 1e10 is far below half an ulp), and a NaN or inf in the
        # update makes its norm non-finite
        update_norm = self.optimizer.step(self.params, clipped)
        if not math.isfinite(update_norm) or update_norm > DIVERGENCE_UPDATE_NORM:
            raise Diverged(f"update norm {update_norm:.3g} above {DIVERGENCE_UPDATE_NORM:.0e}")


def train(run, callbacks: list[Callback] = ()) -> Result:
    """Run one experiment; see the module docstring for what the callbacks receive."""
    t_start = time.perf_counter()
    task = make_run_task(run)
    loop = _Loop(run, task)
    steps, tr = run.train.steps, run.train
    callbacks = list(callbacks) + ([ProgressPrinter()] if tr.verbose else [])
    for cb in callbacks:
        cb.on_start(loop.info())
    final: dict[str, float] = {}
    outcome, solved_at, diverged_at, reason = "unsolved", None, None, None
    grad_norm_peak = float("nan")  # over every step, whether or not a logger keeps that step
    step = 0
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            for step in range(steps + 1):
                loss, grads, cache, ds, dout = loop.gradient()
                arrays = _through_time(ds, cache)
                metrics = _gradient_metrics(loss, arrays)
                diagnostic = step % tr.diag_interval == 0 or step == steps
                total, omega = loop.regularize(grads, cache, ds, diagnostic)
                metrics.update(omega)
                # clipping sees the regularized gradient, as in Pascanu et al.'s code
                clipped, clip_info = clip_grads(total, run.clip.mode, run.clip.threshold)
                metrics["grad/norm"] = clip_info["norm"]
                metrics["grad/clipped"] = float(clip_info["clipped"])
                if not math.isfinite(clip_info["norm"]):
                    raise Diverged("non-finite gradient")
                if not grad_norm_peak >= clip_info["norm"]:  # NaN at the start compares False
                    grad_norm_peak = clip_info["norm"]
                if diagnostic:
                    diag, arrays = loop.measure(grads, cache, ds, dout)
                    metrics.update(diag)
                if step % tr.eval_interval == 0 or step == steps:
                    metrics.update(loop.evaluate())
                    if solved_at is None and task.is_solved(metrics["eval/loss"], metrics["eval/accuracy"]):
                        solved_at = step
                metrics = _finite(metrics)
                final.update(metrics)
                for cb in callbacks:
                    cb.on_step(step, metrics)
                    cb.on_through_time(step, arrays)
                if step == steps or (solved_at is not None and tr.stop_when_solved):
                    break
                loop.update(clipped)
        if solved_at is not None:
            outcome = "solved"
    except Diverged as err:
        outcome, diverged_at, reason = "diverged", step, str(err)
    result = Result(
        outcome=outcome, steps_done=step, solved_at=solved_at, diverged_at=diverged_at, diverged_reason=reason,
        final=final, grad_norm_peak=grad_norm_peak, baseline=float(task.baseline),
        wall_time=time.perf_counter() - t_start,
    )
    for cb in callbacks:
        cb.on_end(result)
    return result
