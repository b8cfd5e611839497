"""The performance benchmark: prints the targets and writes reports/bench.md.

    python scripts/bench.py [--torch-python PY] [--jax-python PY] [--baseline REV] [--job-repeats 3]
                            [--skip-jobs] [--skip-sweeps | --sweep-shard 0/8 --sweep-repeats 2]
    quick: --skip-sweeps --repeats 2 --job-repeats 1 --job-steps-scale 0.1 --mlflow-runs 1 --steps 100

Sections, each one function that measures and one that writes its part of bench.md:

- study jobs against the baseline code (`--baseline`, default 2604a66: where the performance work started),
  extracted beside this code with git archive: three jobs of the study, each in a fresh subprocess of this
  interpreter on 1 BLAS thread (as a sweep's worker), interleaved: the baseline, this code on its default
  backend (numba) and this code with RNNGRAD_BACKEND=numpy; only `training.train` is timed;
- the core's forward + backward (tanh, float64, loss at the last step) at the study's sizes and two larger
  ones, against the GEMM bound (the matrix products any BPTT of the same shapes does), torch nn.RNN and JAX
  (jit(grad) of a lax.scan, float64, one thread), each reference in its own interpreter;
- the LSTM, the GRU and the normalized RNNs at the study's sizes, against torch nn.LSTM and nn.GRU;
- the per-step instruments' cost; MLflow's share of a run and the per-job start-up; sweep throughput with 1
  and 2 workers (by default the whole default study, ~20 min: `--sweep-shard 0/8` runs every 8th job,
  `--skip-sweeps` none); where float32 underflows a vanishing gradient that float64 still measures.

Every figure is measured by this run, side by side (in this process or in subprocesses it starts), as medians
over repeats; the machine (CPU, cores, BLAS and its kernel, numba, the backend, the load) is described with
them. It is a benchmark, not a test: nothing here fails, each target is reported PASS, FAIL or n/a with its
measured value, and every failure is explained from this run's figures.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from rnngrad import config, core, diagnostics
from rnngrad.losses import make_loss
from rnngrad.nn.backend import ENV as BACKEND_ENV
from rnngrad.nn.backend import using as using_backend
from rnngrad.nn.cells import N_GATES
from rnngrad.nn.model import backend_name
from rnngrad.report.markdown import table as markdown_table
from rnngrad.tasks import make_task
from rnngrad.training import Callback, make_run_task, train

ROOT = Path(__file__).resolve().parents[1]
CORE_SHAPES = [(100, 32, 32), (100, 32, 64), (200, 32, 128), (200, 128, 256)]  # (T, B, H)
STUDY_SHAPES = CORE_SHAPES[:2]  # the study's sizes: its T = 100 jobs at H = 32 and 64
LARGE_SHAPE = (200, 128, 256)
CELL_MODELS = {"LSTM": ("lstm", "none"), "GRU": ("gru", "none"), "rnn + layer norm": ("rnn", "layer"),
               "rnn + batch norm": ("rnn", "batch")}  # label: (cell, norm)
TORCH_CELLS = {"LSTM": "lstm", "GRU": "gru"}  # the models torch has as one module
CORE_D, CORE_O = 2, 1  # the adding problem's input and output sizes
TORCH_ENV, JAX_ENV = "RNNGRAD_TORCH_PYTHON", "RNNGRAD_JAX_PYTHON"
RECOMMENDED_INTERVAL = 100  # the diag_interval that keeps the instruments within 10% (see bench.md)
BASELINE = "2604a66"  # the commit the performance work started from
ONE_BLAS_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # a sweep worker's
XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
# three jobs of the study (conf/experiment), as fixed work: (overrides, train.steps)
STUDY_JOBS = {
    "temporal order T=40 H=32 (seqlen)": (["task=temporal_order", "task.seq_len=40", "model.hidden_size=32",
                                           "model.activation=tanh", "model.init=gaussian", "optim.lr=0.01"], 1500),
    "LSTM adding T=100 H=32 (remedies)": (["task=adding", "task.seq_len=100", "model=lstm", "model.hidden_size=32",
                                           "model.init=orthogonal", "optim.lr=0.01"], 1000),
    "classic: adding T=200 H=64": (["task=adding", "task.seq_len=200", "model.hidden_size=64"], 2000),
}
JOB_FIXED = ["train.stop_when_solved=false", "train.verbose=false"]
JOB_SPEEDUP, TORCH_SPEEDUP, CELL_SPEEDUP = 2.0, 3.0, 2.0  # the targets' ratios
STUDY_BOUND, LARGE_BOUND = 0.5, 0.7  # the targets' fractions of the GEMM bound


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: first-touch allocations, BLAS thread start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def blas_threads() -> int:
    """numpy's BLAS threads (scipy's, which the numba kernels call, follow a threadpoolctl limit too)."""
    blas = [info for info in threadpool_info() if info["user_api"] == "blas"]
    return next((info for info in blas if "numpy" in info["filepath"]), blas[0])["num_threads"]


def blas_owner(info: dict) -> str:
    return next((f"{name}'s" for name in ("numpy", "scipy") if f"{name}." in info["filepath"]), info["prefix"])


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    backend = backend_name()  # resolves the backend: with numba, scipy's BLAS is loaded too
    blas = [f"{blas_owner(i)} {i['internal_api']} {i['version']} (kernel {i.get('architecture')}, threads: {i['num_threads']}, "
            f"{i.get('threading_layer')})" for i in threadpool_info() if i["user_api"] == "blas"]
    numba = importlib.metadata.version("numba") if importlib.util.find_spec("numba") else "not installed"
    return {
        "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
        "blas": "; ".join(blas), "numba": numba, "backend": backend,
        "env": {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS",
                                           "OMP_NUM_THREADS", BACKEND_ENV) if k in os.environ},
        "load": os.getloadavg(),
    }


# --------------------------------------------------------------------------------------------
# Study jobs: the baseline code against this code, each job in a fresh subprocess
# --------------------------------------------------------------------------------------------

JOB_SCRIPT = r"""
import json, sys, time
import rnngrad
from hydra import compose, initialize_config_dir
from rnngrad import config, training
from rnngrad.nn import model
conf, overrides = json.loads(sys.argv[1])
start = time.perf_counter()
if hasattr(model, "warm_up"):
    model.warm_up()  # every numba kernel from numba's cache, as a sweep's worker has them after its first job
warm_up = time.perf_counter() - start
config.register_configs()
with initialize_config_dir(config_dir=conf, version_base="1.3"):
    run = config.checked(compose(config_name="config", overrides=overrides))
start = time.perf_counter()
training.train(run, [])
seconds = time.perf_counter() - start
backend = model.backend_name() if hasattr(model, "backend_name") else "numpy"
print(json.dumps({"seconds": seconds, "warm_up_s": warm_up, "backend": backend, "code": rnngrad.__file__}))
"""


def extract(rev: str, into: Path) -> str:
    """The code at `rev` in `into` (git archive: no git state left behind); returns the full commit."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", f"{rev}^{{commit}}"], check=True,
                            capture_output=True, text=True).stdout.strip()
    archive = subprocess.Popen(["git", "-C", str(ROOT), "archive", commit], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(into)], stdin=archive.stdout, check=True)
    archive.stdout.close()
    if archive.wait() != 0:
        raise RuntimeError(f"git archive {commit} failed")
    return commit


def run_job(code: Path, overrides: list[str], backend: str | None) -> dict:
    """One job of `code` (a tree with src/ and conf/) in a fresh subprocess of this interpreter, 1 BLAS thread."""
    env = {key: value for key, value in os.environ.items() if key != BACKEND_ENV}
    env.update(ONE_BLAS_THREAD, PYTHONPATH=str(code / "src"), **({BACKEND_ENV: backend} if backend else {}))
    done = subprocess.run([sys.executable, "-c", JOB_SCRIPT, json.dumps([str(code / "conf"), overrides])],
                          cwd=code, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"job {overrides} of {code} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if not Path(result["code"]).resolve().is_relative_to((code / "src").resolve()):
        raise RuntimeError(f"the job meant for {code} imported rnngrad from {result['code']}")
    return result


def job_overrides(options: list[str], steps: int) -> list[str]:
    return [*options, f"train.steps={steps}", *JOB_FIXED]


def job_row(name: str, overrides: list[str], runs: dict[str, list[dict]]) -> dict:
    """A job's medians per code, the ratios, the GEMM bound of its training steps' products and the time of its
    model's forward + backward (this code on the backend its job ran on, in this process, on 1 BLAS thread)."""
    run = config.checked(compose(overrides))
    task = make_run_task(run)
    T, B, H, gates = task.length, run.train.batch_size, run.model.hidden_size, N_GATES[run.model.cell]
    model = model_problem(T, B, H, run.model.cell, run.model.norm, task.input_size, task.output_size, run.model.activation)
    with threadpool_limits(1, user_api="blas"), using_backend(runs["new"][0]["backend"]):  # the new code's job's backend
        step_bound, step_model = median_seconds(gemm_bound(T, B, H, gates), 10), median_seconds(model, 10)
    seconds = {code: float(np.median([r["seconds"] for r in results])) for code, results in runs.items()}
    return {"job": name, "overrides": overrides, "shape": (T, B, H), "gates": gates, "steps": run.train.steps,
            "seconds": seconds, "backend": {code: results[0]["backend"] for code, results in runs.items()},
            "warm_up_s": float(np.median([r["warm_up_s"] for r in runs["new"]])),
            "bound_s": (run.train.steps + 1) * step_bound,  # train computes a gradient at steps 0 .. steps
            "model_s": (run.train.steps + 1) * step_model,
            "ratio": {code: seconds["baseline"] / seconds[code] for code in runs if code != "baseline"}}


def bench_jobs(rev: str, repeats: int, scale: float) -> dict:
    """The study's jobs on the baseline code and on this code (both backends), interleaved, `repeats` each.
    A first untimed subprocess per code and backend compiles numba's kernels into its cache and writes the .pyc."""
    jobs = {name: job_overrides(options, max(1, round(steps * scale))) for name, (options, steps) in STUDY_JOBS.items()}
    with tempfile.TemporaryDirectory() as tmp:
        commit = extract(rev, Path(tmp))
        codes = {"baseline": (Path(tmp), None), "new": (ROOT, None), "new numpy": (ROOT, "numpy")}
        first = next(iter(STUDY_JOBS.values()))[0]
        for code, backend in codes.values():
            run_job(code, job_overrides(first, 10), backend)
        runs = {(job, code): [] for job in jobs for code in codes}
        for i in range(repeats):
            order = list(codes) if i % 2 == 0 else list(codes)[::-1]  # drift in the machine's load hits all alike
            for job, overrides in jobs.items():
                for code in order:
                    path, backend = codes[code]
                    runs[job, code].append(run_job(path, overrides, backend))
                    print(f"job {job}, {code}: {runs[job, code][-1]['seconds']:.2f} s", flush=True)
    rows = [job_row(job, overrides, {code: runs[job, code] for code in codes}) for job, overrides in jobs.items()]
    return {"rev": rev, "commit": commit, "repeats": repeats, "scale": scale, "rows": rows}


# --------------------------------------------------------------------------------------------
# The core and the cells against the GEMM bound, torch and JAX
# --------------------------------------------------------------------------------------------


def model_problem(T: int, B: int, H: int, cell: str = "rnn", norm: str = "none", D: int = CORE_D, O: int = CORE_O,
                  activation: str = "tanh"):
    """forward + backward of a model in float64 on its input with a loss at the last step only, a workspace
    reused as the training loop reuses it."""
    rng = np.random.default_rng(0)
    params = core.init_params(D, H, O, cell=cell, norm=norm, init="orthogonal", rng=rng)
    x = rng.standard_normal((T, B, D))
    dout = np.zeros((T, B, O))
    dout[-1] = rng.standard_normal((B, O))
    workspace = core.Workspace()  # buffers allocated once

    def forward_backward():
        _, cache = core.forward(params, x, activation=activation, cell=cell, norm=norm, workspace=workspace)
        core.backward(params, cache, dout, workspace=workspace)

    return forward_backward


def gemm_bound(T: int, B: int, H: int, gates: int = 1):
    """The matrix products of any BPTT of these shapes with `gates` gates: 2T recurrent (B, H) @ (H, G H)
    products (forward and backward), one (H, T B) @ (T B, G H) weight gradient."""
    rng = np.random.default_rng(1)
    s, W, rec = rng.standard_normal((B, H)), rng.standard_normal((H, gates * H)), np.empty((B, gates * H))
    a, d = rng.standard_normal((H, T * B)), rng.standard_normal((T * B, gates * H))

    def products():
        for _ in range(2 * T):
            np.matmul(s, W, out=rec)
        a @ d

    return products


def core_flops(T: int, B: int, H: int) -> float:
    """The matrix-product flops of forward + backward: x U, s W, s V; then ds W^T (T-1 steps), dU, dW, dV."""
    D, O = CORE_D, CORE_O
    return 2.0 * T * B * (D * H + H * H + H * O) + 2.0 * (T - 1) * B * H * H + 2.0 * T * B * H * (D + H + O)


def shape_problems(shape: tuple) -> dict:
    """Everything timed at one shape: the core and its bound; at the study's sizes the other models and theirs."""
    fns = {"core": model_problem(*shape), "gemm1": gemm_bound(*shape)}
    if shape in STUDY_SHAPES:
        fns |= {label: model_problem(*shape, cell=cell, norm=norm) for label, (cell, norm) in CELL_MODELS.items()}
        fns |= {f"gemm{g}": gemm_bound(*shape, g) for g in sorted({N_GATES[c] for c, _ in CELL_MODELS.values()} - {1})}
    return fns


def time_models(repeats: int) -> dict:
    """Seconds per (shape, name) of `shape_problems`, each shape's problems timed interleaved, twice."""
    times = {}
    for shape in CORE_SHAPES:
        fns = shape_problems(shape)
        for _ in range(2):
            for name, fn in fns.items():
                times.setdefault((shape, name), []).append(median_seconds(fn, repeats))
    return times


def model_medians(runs: list[dict]) -> dict:
    return {key: float(np.median([t for run in runs for t in run[key]])) for key in runs[0]}


def reference_key(kind: str, shape: tuple) -> str:
    return ",".join(map(str, (kind, *shape)))


def core_rows(times: dict, torch_result: dict | None, jax_result: dict | None) -> list[dict]:
    rows = []
    for shape in CORE_SHAPES:
        t_core, t_gemm = times[shape, "core"], times[shape, "gemm1"]
        key = reference_key("rnn", shape)
        rows.append({"shape": shape, "core_s": t_core, "gemm_s": t_gemm, "gflops": core_flops(*shape) / t_core / 1e9,
                     "bound_fraction": t_gemm / t_core,
                     "torch_s": torch_result["seconds"].get(key) if torch_result else None,
                     "jax_s": jax_result["seconds"].get(key) if jax_result else None})
    return rows


def cell_rows(times: dict, torch_result: dict | None) -> list[dict]:
    rows = []
    for shape in STUDY_SHAPES:
        for label, (cell, norm) in CELL_MODELS.items():
            key = reference_key(TORCH_CELLS.get(label, "-"), shape)
            t_torch = torch_result["seconds"].get(key) if torch_result and label in TORCH_CELLS else None
            gates = N_GATES[cell]
            rows.append({"model": label, "shape": shape, "s": times[shape, label], "gates": gates,
                         "gemm_s": times[shape, f"gemm{gates}"], "torch_s": t_torch})
    return rows


REFERENCE_PRELUDE = r"""
import json, sys, time
def median_of(fn, repeats):
    fn()  # torch: first-touch allocations; JAX: the compilation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]
"""

TORCH_SCRIPT = REFERENCE_PRELUDE + r"""
import torch
cases, D, O, threads, repeats = json.loads(sys.argv[1])
torch.set_num_threads(threads)
torch.manual_seed(0)
result = {"version": torch.__version__, "threads": torch.get_num_threads(), "seconds": {}}
for kind, T, B, H in cases:
    if kind == "rnn":
        net = torch.nn.RNN(D, H, nonlinearity="tanh", dtype=torch.float64)
    else:
        net = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](D, H, dtype=torch.float64)
    linear = torch.nn.Linear(H, O, dtype=torch.float64)
    x = torch.randn(T, B, D, dtype=torch.float64)
    g = torch.randn(B, O, dtype=torch.float64)
    def step():
        net.zero_grad(set_to_none=True)
        linear.zero_grad(set_to_none=True)
        s, _ = net(x)
        loss = (linear(s)[-1] * g).sum()  # outputs at every step, the loss at the last one
        loss.backward()
    result["seconds"][f"{kind},{T},{B},{H}"] = median_of(step, 3 * repeats)
print(json.dumps(result))
"""

JAX_SCRIPT = REFERENCE_PRELUDE + r"""
import jax
import jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
shapes, D, O, repeats = json.loads(sys.argv[1])

def loss(params, x, g):
    U, W, b, V, c = params
    def step(s, x_t):
        s = jnp.tanh(x_t @ U + s @ W + b)
        return s, s
    _, states = jax.lax.scan(step, jnp.zeros((x.shape[1], W.shape[0]), x.dtype), x)
    return jnp.sum((states @ V + c)[-1] * g)  # outputs at every step, the loss at the last one

grad = jax.jit(jax.grad(loss))
result = {"version": jax.__version__, "devices": [str(d) for d in jax.devices()], "seconds": {}}
for T, B, H in shapes:
    k = jax.random.split(jax.random.PRNGKey(0), 4)
    params = (jax.random.normal(k[0], (D, H)), jax.random.normal(k[1], (H, H)) / H ** 0.5, jnp.zeros(H),
              jax.random.normal(k[2], (H, O)) / H ** 0.5, jnp.zeros(O))
    x, g = jax.random.normal(k[3], (T, B, D)), jnp.ones((B, O))
    result["dtype"] = str(grad(params, x, g)[1].dtype)
    result["seconds"][f"rnn,{T},{B},{H}"] = median_of(lambda: jax.block_until_ready(grad(params, x, g)), 3 * repeats)
print(json.dumps(result))
"""


def torch_python(requested: str | None) -> str | None:
    """The interpreter that has torch: --torch-python, else this one if it can import torch, else $RNNGRAD_TORCH_PYTHON."""
    if requested:
        return requested
    if importlib.util.find_spec("torch") is not None:
        return sys.executable
    return os.environ.get(TORCH_ENV)


def run_reference(name: str, command: list[str], env: dict | None = None) -> dict | None:
    """The last line of a reference script's output as JSON, or None (and its error) when it fails."""
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        print(f"{name} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def where(python: str) -> str:
    """Where a reference ran, without this machine's paths."""
    return "in this environment" if python == sys.executable else "in a separate environment"


def bench_torch(python: str | None, repeats: int) -> dict | None:
    """torch nn.RNN at the core's shapes, nn.LSTM and nn.GRU at the study's; torch gets numpy's BLAS threads."""
    if python is None:
        return None
    cases = [["rnn", *shape] for shape in CORE_SHAPES] + [[kind, *shape] for shape in STUDY_SHAPES
                                                          for kind in TORCH_CELLS.values()]
    result = run_reference("torch", [python, "-c", TORCH_SCRIPT, json.dumps([cases, CORE_D, CORE_O, blas_threads(), repeats])])
    return result and {**result, "where": where(python)}


def bench_jax(python: str | None, repeats: int) -> dict | None:
    """JAX's jit(grad) of the same tanh RNN at the core's shapes, float64, on one thread: XLA's flags, and
    pinned to one core with taskset where it exists."""
    if python is None:
        return None
    taskset = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    env = {**os.environ, **ONE_BLAS_THREAD, "XLA_FLAGS": XLA_ONE_THREAD}
    result = run_reference("JAX", [*taskset, python, "-c", JAX_SCRIPT, json.dumps([CORE_SHAPES, CORE_D, CORE_O, repeats])], env)
    pinning = f'XLA_FLAGS="{XLA_ONE_THREAD}"' + (" and `taskset -c 0`" if taskset else " (no taskset on this machine)")
    return result and {**result, "where": where(python), "pinning": pinning}


# --------------------------------------------------------------------------------------------
# The instruments' cost
# --------------------------------------------------------------------------------------------

# representative runs of the study (conf/experiment): the default config and one of each kind
INSTRUMENT_RUNS = {
    "default: adding T50 H64 tanh": [],
    "seqlen: temporal order T80 H32 tanh": ["task=temporal_order", "task.seq_len=80", "model.hidden_size=32",
                                            "model.init=gaussian", "optim.lr=0.01"],
    "truncation: temporal order T20 H32 k=4": ["task=temporal_order", "task.seq_len=20", "model.hidden_size=32",
                                               "optim.lr=0.01", "bptt.truncation=4"],
    "remedies: lstm adding T100 H32": ["task.seq_len=100", "model.hidden_size=32", "model=lstm", "optim.lr=0.01"],
}


class StepClock(Callback):
    def __init__(self):
        self.times: dict[int, float] = {}

    def on_step(self, step, metrics):
        self.times[step] = time.perf_counter()


def step_seconds(run: config.Config) -> np.ndarray:
    """The duration of every step 1 .. steps-1 of a run, indexed by step (index 0 unused)."""
    clock = StepClock()
    train(run, [clock])
    return np.diff([clock.times[step] for step in range(run.train.steps)], prepend=np.nan)


def norms_seconds(run: config.Config, repeats: int) -> float:
    """The every-step instruments alone: ||dL/ds_t|| over t and its decay rate (and dL/dc_t for the LSTM)."""
    T = make_run_task(run).length
    parts = 2 if run.model.cell == "lstm" else 1
    ds = [np.random.default_rng(0).standard_normal((T, run.train.batch_size, run.model.hidden_size))] * parts

    def norms():
        for array in ds:
            diagnostics.decay_rate(diagnostics.grad_norms_through_time(array))

    return median_seconds(norms, 50 * repeats)


def bench_instruments(steps: int, repeats: int, intervals: list[int]) -> list[dict]:
    """Per run: the median step without interval instruments and the median extra time of the steps with them,
    from the same runs (medians resist bursts of other work on the machine), over `repeats` runs per interval."""
    rows = []
    for name, options in INSTRUMENT_RUNS.items():
        base = [*options, f"train.steps={steps}", f"train.eval_interval={steps + 1}", "train.verbose=false"]
        plain, extra = [], {}
        for interval in intervals:
            extra[interval] = []
            run = config.checked(compose([*base, f"train.diag_interval={interval}"]))
            for _ in range(repeats):
                durations = step_seconds(run)[1:]
                measured = np.arange(1, steps) % interval == 0
                plain.append(float(np.median(durations[~measured])))
                extra[interval].append(float(np.median(durations[measured])) - plain[-1])
        t_plain = float(np.median(plain))
        t_norms = norms_seconds(config.checked(compose(base)), repeats)
        bare = t_plain - t_norms
        rows.append({"run": name, "bare_ms": bare * 1e3, "norms_pct": 100 * t_norms / bare,
                     "all_pct": {i: 100 * (t_norms + float(np.median(extra[i])) / i) / bare for i in intervals}})
    return rows


# --------------------------------------------------------------------------------------------
# MLflow's share of a run, the per-job start-up, and sweeps
# --------------------------------------------------------------------------------------------


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    config.register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


class Timed:
    """Replaces owner.name by a wrapper that adds each call's duration to self.seconds; undo() restores it."""

    def __init__(self, owner, name: str):
        self.owner, self.name, self.original, self.seconds = owner, name, getattr(owner, name), 0.0

        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return self.original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        setattr(owner, name, wrapper)

    def undo(self) -> None:
        setattr(self.owner, self.name, self.original)


def bench_mlflow(runs: int) -> dict:
    """Runs at default settings as a sweep's job runs them (store, experiment and parent run exist),
    into a temporary SQLite store. Logging = run creation + every call inside MlflowLogger; of that,
    log_batch (metrics, params, tags) and the artifacts at the end (parquet, heatmap, upload)."""
    from mlflow.tracking import MlflowClient

    from rnngrad.app import main as entry
    from rnngrad.app import tracking

    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        exp_id = tracking.prepare_store(uri, "bench")
        parent = MlflowClient(uri).create_run(exp_id, run_name="bench-sweep")
        os.environ[entry.PARENT_ENV], os.environ[entry.EXPERIMENT_ENV] = parent.info.run_id, exp_id
        rows = []
        for seed in range(runs + 1):  # the first pays the one-time imports of a fresh worker
            timers = [Timed(tracking, "start_run"), Timed(MlflowClient, "log_batch"),
                      Timed(tracking.MlflowLogger, "_log_artifacts")]
            try:
                start = time.perf_counter()
                cfg = compose([f"tracking.uri={uri}", "tracking.experiment=bench", "train.verbose=false", f"seed={seed}"])
                composed = time.perf_counter()
                out = entry.run(cfg)
                total = time.perf_counter() - composed
            finally:
                for timer in timers:
                    timer.undo()
            created, batches, artifacts = (timer.seconds for timer in timers)
            logging = created + out["logging_seconds"]
            rows.append({"compose_s": composed - start, "run_s": total, "logging_s": logging, "share_pct": 100 * logging / total,
                         "log_batch_s": batches, "artifacts_s": artifacts,
                         "overhead_s": composed - start + total - out["wall_time"]})
        os.environ.pop(entry.PARENT_ENV)
        os.environ.pop(entry.EXPERIMENT_ENV)
    steady = rows[1:]
    return {"first": rows[0], **{k: float(np.median([r[k] for r in steady])) for k in steady[0]}}


# like the study's seqlen grid, its largest part (fixed work: no stop_when_solved)
SWEEP_SHARD = "0/1"  # the sweep compared with 1 and 2 workers: the default study, all of it


def sweep_arguments(shard: str) -> list[str]:
    return ["experiment=study", f"hydra.sweeper.shard={shard}"]


def study_jobs() -> int:
    """The number of jobs of the default study, expanded from its grids as the sweeper does."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from hydra_plugins.rnngrad_sweeper.grids_sweeper import expand_grids

    config.register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        master = hydra_compose(config_name="config", overrides=["experiment=study"], return_hydra_config=True)
        jobs = expand_grids(master.hydra.sweeper.params, master.hydra.sweeper.grids, ["experiment=study"],
                            OverridesParser.create())
    return len(jobs)


def run_sweep(arguments: list[str], n_jobs: int, tmp: Path) -> dict:
    """A sweep in a subprocess into its own store. Returns its wall time, the training steps of its runs, and the
    span from the first job's start to the last job's end (the sweep without its fixed start, which a long
    sweep amortizes: Python and imports, composing every job, starting the workers)."""
    from mlflow.tracking import MlflowClient

    store = tmp / f"sweep{n_jobs}"
    store.mkdir(parents=True)
    uri = f"sqlite:///{store}/mlflow.db"
    command = [sys.executable, "-m", "rnngrad.train", "-m", *arguments, "train.verbose=false",
               f"hydra.launcher.n_jobs={n_jobs}", f"tracking.uri={uri}", f"hydra.sweep.dir={store}/multirun"]
    start, epoch = time.perf_counter(), time.time()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    wall = time.perf_counter() - start
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("rnngrad")
    runs = [r for r in client.search_runs([exp.experiment_id], max_results=5000) if "steps_done" in r.data.tags]
    steps = sum(int(r.data.tags["steps_done"]) for r in runs)
    first, last = min(r.info.start_time for r in runs) / 1000, max(r.info.end_time for r in runs) / 1000
    span = last - first
    return {"jobs": len(runs), "steps": steps, "wall_s": wall, "steps_per_s": steps / wall, "span_s": span,
            "steady_steps_per_s": steps / span, "before_s": first - epoch, "after_s": epoch + wall - last,
            "run_s": sum(r.info.end_time - r.info.start_time for r in runs) / 1000}


def worker_blas_threads(n_jobs: int) -> list[int]:
    """The BLAS threads each joblib (loky) worker of the launcher gets: cores // n_jobs by default."""
    from joblib import Parallel, delayed

    return sorted(set(Parallel(n_jobs=n_jobs)(delayed(blas_threads)() for _ in range(2 * n_jobs))))


def sweep_order(repeats: int) -> list[int]:
    """Worker counts in the order run: 1, 2, then 2, 1, ... (drift in the machine's load hits both alike)."""
    return [n for i in range(repeats) for n in ((1, 2) if i % 2 == 0 else (2, 1))]


def bench_sweeps(shard: str, repeats: int) -> dict:
    """The study's shard `repeats` times per worker count (order: `sweep_order`); the medians."""
    runs = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for i, n_jobs in enumerate(sweep_order(repeats)):
            runs[n_jobs].append(run_sweep(sweep_arguments(shard), n_jobs, Path(tmp) / str(i)))
    one, two = ({key: float(np.median([r[key] for r in runs[n]])) for key in runs[n][0]} for n in (1, 2))
    return {"shard": shard, "repeats": repeats, "one": one, "two": two, "speedup": two["steps_per_s"] / one["steps_per_s"],
            "steady_speedup": two["steady_steps_per_s"] / one["steady_steps_per_s"],
            "worker_threads": worker_blas_threads(2), "serial_threads": blas_threads()}


def bench_study(seconds: float | None, run: bool, sweeps: dict | None) -> dict | None:
    if sweeps is not None and sweeps["shard"] == "0/1":
        return {**sweeps["two"], "source": "the 2-worker sweep" + (" above" if sweeps["repeats"] == 1 else "s above, median")
                + ": the default study's launcher settings"}
    if run:
        with tempfile.TemporaryDirectory() as tmp:
            return {**run_sweep(["experiment=study"], -1, Path(tmp)), "source": "measured by this run"}
    if seconds is not None:
        return {"wall_s": seconds, "source": "measured externally (--study-seconds)"}
    return None


# --------------------------------------------------------------------------------------------
# float32 against float64 on a vanishing gradient
# --------------------------------------------------------------------------------------------


def underflow_distance(activation: str, init: str, rho: float, T: int = 100, H: int = 64) -> dict:
    """||dL/ds_t|| at initialization on the adding problem (the study's init grid) in both precisions:
    the first distance T - t at which float32 gives exactly 0 while float64 still gives a positive number."""
    task = make_task("adding", seq_len=T)
    x, y, mask = task.sample(32, np.random.default_rng(0))
    loss = make_loss(task.loss)
    norms = {}
    for dtype in (np.float64, np.float32):
        params = core.init_params(task.input_size, H, task.output_size, init=init, spectral_radius=rho, rng=0, dtype=dtype)
        out, cache = core.forward(params, x.astype(dtype), activation=activation)
        _, dout = loss(out.astype(np.float64), y, mask)
        _, ds = core.backward(params, cache, dout.astype(dtype))
        norms[dtype] = diagnostics.grad_norms_through_time(ds)[::-1]  # index = distance from the last step
    lost = np.flatnonzero((norms[np.float32] == 0) & (norms[np.float64] > 0))
    first = int(lost[0]) if lost.size else None
    return {"activation": activation, "init": init, "rho": rho, "distance": first,
            "float64_there": float(norms[np.float64][first]) if first is not None else None,
            "float64_at_T": float(norms[np.float64][-1]), "float32_min_positive": float(norms[np.float32][norms[np.float32] > 0].min())}


def bench_float32() -> list[dict]:
    rows = [underflow_distance(act, init, rho) for act in ("sigmoid", "tanh") for init in ("gaussian", "orthogonal")
            for rho in (0.5, 0.8, 1.0)]
    return [r for r in rows if r["distance"] is not None] or rows[:1]


# --------------------------------------------------------------------------------------------
# The targets, and what their failures come from
# --------------------------------------------------------------------------------------------


class Goal(NamedTuple):
    what: str
    target: str
    measured: str
    verdict: str
    why: str = ""  # for a failure: its cause, in this run's figures


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def goal(what: str, target: str, measured: str, ok: bool | None, why) -> Goal:
    """A target's row; `why()` (the failure's explanation) is called only when it fails."""
    return Goal(what, target, measured, verdict(ok), why() if ok is False else "")


def job_why(r: dict) -> str:
    base, new, bound, model, steps = r["seconds"]["baseline"], r["seconds"]["new"], r["bound_s"], r["model_s"], r["steps"] + 1
    best, need = base / bound, base / JOB_SPEEDUP
    text = (f"- {r['job']}: {base:.2f} s on the baseline, {new:.2f} s on this code. The GEMM bound of its {steps} gradients' "
            f"products ((T, B, H) = {r['shape']}, {r['gates']} gate(s)) is {bound:.2f} s: {100 * bound / base:.0f}% of the "
            f"baseline's time, {100 * bound / new:.0f}% of this code's. A job doing nothing but those products would run "
            f"{best:.2f}x faster than the baseline, ")
    if best < JOB_SPEEDUP:
        text += f"so {JOB_SPEEDUP:g}x is out of reach of any code that does the same products (bound-limited)."
    else:
        text += (f"so {JOB_SPEEDUP:g}x is within the bound: it needs the job in {need:.2f} s, {1e3 * (need - bound) / steps:.2f} ms "
                 f"a step beyond the products, where this code spends {1e3 * (new - bound) / steps:.2f} ms.")
    return text + (f" Of this code's {1e3 * new / steps:.2f} ms a step, the model's forward + backward alone takes "
                   f"{1e3 * model / steps:.2f} ms ({1e3 * bound / steps:.2f} ms of it the products' bound), the rest of the step "
                   f"(loss, optimizer, instruments, evaluation) {1e3 * (new - model) / steps:.2f} ms.")


def job_goals(jobs: dict | None) -> list[Goal]:
    if jobs is None:
        return [Goal("study jobs: baseline / this code", f">= {JOB_SPEEDUP:g}x per job", "not measured (--skip-jobs)",
                     verdict(None))]
    goals = []
    for r in jobs["rows"]:
        ratio = r["ratio"]["new"]
        goals.append(goal(f"study job {r['job']}: baseline {jobs['commit'][:7]} / this code ({r['backend']['new']})",
                          f">= {JOB_SPEEDUP:g}x", f"{ratio:.2f}x ({r['seconds']['baseline']:.2f} s -> {r['seconds']['new']:.2f} s)",
                          ratio >= JOB_SPEEDUP, lambda r=r: job_why(r)))
    return goals


def bound_why(r: dict, fraction: float) -> str:
    T = r["shape"][0]
    extra = r["core_s"] - r["gemm_s"]
    return (f"- core {r['shape']}: {1e3 * r['core_s']:.2f} ms against a GEMM bound of {1e3 * r['gemm_s']:.2f} ms; the "
            f"{1e3 * extra:.2f} ms beyond the products are {1e6 * extra / (2 * T):.1f} us per step each way (tanh and f'(a), the "
            "element-wise passes, the input and output products, the calls around each product). "
            f"{100 * fraction:.0f}% of the bound needs the core in {1e3 * r['gemm_s'] / fraction:.2f} ms.")


def torch_why(name: str, shape: tuple, ours_s: float, torch_s: float, gemm_s: float, speedup: float) -> str:
    need = torch_s / speedup
    return (f"- {name} {shape} against torch: torch {1e3 * torch_s:.2f} ms, {torch_s / gemm_s:.2f}x the GEMM bound of "
            f"{1e3 * gemm_s:.2f} ms; {speedup:g}x faster needs {1e3 * need:.2f} ms ("
            + (f"{100 * gemm_s / need:.0f}% of the bound" if need > gemm_s else "less than the bound itself: out of reach")
            + f"), where it takes {1e3 * ours_s:.2f} ms ({100 * gemm_s / ours_s:.0f}% of the bound).")


def jax_why(r: dict) -> str:
    return (f"- core {r['shape']} against JAX: JAX {1e3 * r['jax_s']:.2f} ms ({100 * r['gemm_s'] / r['jax_s']:.0f}% of the GEMM "
            f"bound of {1e3 * r['gemm_s']:.2f} ms), the core {1e3 * r['core_s']:.2f} ms ({100 * r['bound_fraction']:.0f}%): "
            f"{1e3 * (r['core_s'] - r['jax_s']):.2f} ms more, {1e6 * (r['core_s'] - r['jax_s']) / (2 * r['shape'][0]):.1f} us "
            "per step each way.")


def core_goals(core_table: list[dict]) -> list[Goal]:
    rows = {r["shape"]: r for r in core_table}
    goals = []
    for shape, fraction in [*((s, STUDY_BOUND) for s in STUDY_SHAPES), (LARGE_SHAPE, LARGE_BOUND)]:
        r = rows[shape]
        goals.append(goal(f"core {shape}: fraction of the GEMM bound", f">= {100 * fraction:.0f}%",
                          f"{100 * r['bound_fraction']:.0f}%", r["bound_fraction"] >= fraction,
                          lambda r=r, f=fraction: bound_why(r, f)))
    r = rows[STUDY_SHAPES[0]]
    what = f"core {r['shape']} vs torch nn.RNN float64"
    if r["torch_s"] is None:
        goals.append(Goal(what, f">= {TORCH_SPEEDUP:g}x faster", "torch not available", verdict(None)))
    else:
        speedup = r["torch_s"] / r["core_s"]
        goals.append(goal(what, f">= {TORCH_SPEEDUP:g}x faster (torch ms / core ms)", f"{speedup:.2f}x", speedup >= TORCH_SPEEDUP,
                          lambda: torch_why("core", r["shape"], r["core_s"], r["torch_s"], r["gemm_s"], TORCH_SPEEDUP)))
    for r in (rows[shape] for shape in STUDY_SHAPES):
        what = f"core {r['shape']} vs JAX jit(grad) float64"
        if r["jax_s"] is None:
            goals.append(Goal(what, "<= JAX's time", "JAX not available", verdict(None)))
        else:
            goals.append(goal(what, "<= JAX's time", f"{r['core_s'] / r['jax_s']:.2f}x JAX's time", r["core_s"] <= r["jax_s"],
                              lambda r=r: jax_why(r)))
    return goals


def cell_goals(cell_table: list[dict]) -> list[Goal]:
    goals = []
    for r in (r for r in cell_table if r["shape"] == STUDY_SHAPES[0] and r["model"] in TORCH_CELLS):
        what = f"{r['model']} {r['shape']} vs torch nn.{r['model']} float64"
        if r["torch_s"] is None:
            goals.append(Goal(what, f">= {CELL_SPEEDUP:g}x faster", "torch not available", verdict(None)))
            continue
        speedup = r["torch_s"] / r["s"]
        goals.append(goal(what, f">= {CELL_SPEEDUP:g}x faster (torch ms / ours)", f"{speedup:.2f}x", speedup >= CELL_SPEEDUP,
                          lambda r=r: torch_why(r["model"], r["shape"], r["s"], r["torch_s"], r["gemm_s"], CELL_SPEEDUP)))
    return goals


def instrument_goals(instruments: list[dict], default_interval: int) -> list[Goal]:
    goals = []
    for interval in instruments[0]["all_pct"]:
        worst = max(instruments, key=lambda r: r["all_pct"][interval])
        label = "default" if interval == default_interval else "recommended"
        goals.append(goal(f"instruments at diag_interval={interval} ({label}; worst run: {worst['run']})", "<= 10% over a bare step",
                          f"{worst['all_pct'][interval]:.1f}%", worst["all_pct"][interval] <= 10,
                          lambda w=worst, i=interval: f"- instruments at interval {i}, {w['run']}: a bare step of {w['bare_ms']:.2f} ms; "
                          f"the every-step norms add {w['norms_pct']:.1f}% of it, the interval instruments spread over "
                          f"{i} steps the other {w['all_pct'][i] - w['norms_pct']:.1f}%."))
    worst = max(instruments, key=lambda r: r["norms_pct"])
    goals.append(goal(f"norms through time alone (worst run: {worst['run']})", "<= 3% over a bare step", f"{worst['norms_pct']:.1f}%",
                      worst["norms_pct"] <= 3, lambda: f"- norms through time, {worst['run']}: "
                      f"{worst['norms_pct'] * worst['bare_ms'] * 10:.0f} us a step against a bare step of {worst['bare_ms']:.2f} ms."))
    return goals


def mlflow_why(mlflow: dict) -> str:
    rest = mlflow["logging_s"] - mlflow["log_batch_s"] - mlflow["artifacts_s"]
    return (f"- MLflow: of a {mlflow['run_s']:.1f} s run, {mlflow['logging_s']:.2f} s are logging: {mlflow['log_batch_s']:.2f} s "
            f"inside log_batch calls, {mlflow['artifacts_s']:.2f} s in the artifacts at the end (parquet, heatmap, upload) "
            f"and {rest:.2f} s in the logger's other MLflow calls (run creation, waiting for asynchronous batches, "
            f"termination); start-up {mlflow['overhead_s']:.2f} s, of which {mlflow['compose_s']:.2f} s composing the config. "
            "They live in the tracking layer (rnngrad.app.tracking), not in the training loop.")


def run_goals(mlflow: dict, sweeps: dict | None) -> list[Goal]:
    goals = [goal("MLflow logging, default run", "<= 3% of the run's wall time", f"{mlflow['share_pct']:.1f}%",
                  mlflow["share_pct"] <= 3, lambda: mlflow_why(mlflow)),
             goal("per-job start-up (compose, run creation, final flush)", "<= 0.5 s", f"{mlflow['overhead_s']:.2f} s",
                  mlflow["overhead_s"] <= 0.5, lambda: mlflow_why(mlflow))]
    if sweeps is not None:
        one, two = sweeps["one"], sweeps["two"]
        why = (lambda: f"- sweeps: {one['steady_steps_per_s']:.0f} -> {two['steady_steps_per_s']:.0f} steps/s while jobs run; "
               f"before the first job {one['before_s']:.1f} s and {two['before_s']:.1f} s, after the last {one['after_s']:.1f} s and "
               f"{two['after_s']:.1f} s, of {one['wall_s']:.1f} s and {two['wall_s']:.1f} s wall (1 and 2 workers).")
        for key, label in (("steady_speedup", "while jobs run"), ("speedup", "over the whole wall time")):
            goals.append(goal(f"sweep throughput {label}, 2 workers vs 1", ">= 1.8x", f"{sweeps[key]:.2f}x", sweeps[key] >= 1.8, why))
    return goals


def targets(m: dict, sweeps: dict | None) -> list[Goal]:
    return [*job_goals(m["jobs"]), *core_goals(m["core_table"]), *cell_goals(m["cell_table"]),
            *instrument_goals(m["instruments"], m["default_interval"]), *run_goals(m["mlflow"], sweeps)]


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def table(header: list[str], rows: list[list]) -> list[str]:
    """A markdown table as lines (the report's writer; raw: its cells are markdown this script wrote, code spans included)."""
    return markdown_table(rows, header, raw=True).split("\n")


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{1e3 * seconds:.2f}"


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None else f"{a / b:.2f}x"


def head_section(info, goals, seconds) -> list[str]:
    lines = ["# Benchmark", "", f"Generated by `scripts/bench.py` in {seconds:.0f} s. Every figure below was measured by that run, "
             "side by side, as medians over repeats. A benchmark, not a test: targets are reported, not enforced.", "",
             "## Machine", ""]
    lines += [f"- CPU: {info['cpu']}, {info['cores']} cores", f"- BLAS: {info['blas']}",
              f"- Python {info['python']}, numpy {info['numpy']}, numba {info['numba']}",
              f"- backend: {info['backend']} (`rnngrad.nn.model.backend_name()`; ${BACKEND_ENV} "
              + (f"= {info['env'][BACKEND_ENV]})" if BACKEND_ENV in info["env"] else "unset: auto)"),
              f"- BLAS-related environment: {info['env'] or 'none set'}",
              f"- load average at start {info['load'][0]:.2f}, at end {info['load_end'][0]:.2f} "
              "(other work on the machine inflates every figure; ratios measured side by side suffer least)", ""]
    lines += ["## Targets", ""] + table(["what", "target", "measured", "verdict"], [list(g[:4]) for g in goals]) + [""]
    why = list(dict.fromkeys(g.why for g in goals if g.why))  # one note per cause
    return lines + ["What the failures come from, in this run's figures:", ""] + (why or ["- no target failed."]) + [""]


def jobs_section(jobs) -> list[str]:
    lines = ["## Study jobs against the baseline code", ""]
    if jobs is None:
        return lines + ["Not measured (--skip-jobs)."]
    rows = jobs["rows"]
    lines += [f"The baseline: commit {jobs['commit'][:7]} (`--baseline {jobs['rev']}`), extracted beside this code with "
              "`git archive`. Each job in a fresh subprocess of the same interpreter with PYTHONPATH at that code's src/ and "
              f"1 BLAS thread ({', '.join(f'{k}=1' for k in ONE_BLAS_THREAD)}: a sweep's worker), the codes interleaved, "
              f"median of {jobs['repeats']} (`--job-repeats`). Timed: `training.train(config.checked(cfg), [])` alone, the "
              "config composed with that code's conf/; fixed work (`train.stop_when_solved=false`). Before the timed call this "
              f"code loads every numba kernel from numba's on-disk cache (`nn.model.warm_up()`, {rows[0]['warm_up_s']:.2f} s, "
              "untimed: a sweep's worker pays it once, not per job); a first untimed subprocess per code compiled them. "
              "GEMM bound: the recurrent and weight-gradient products of the job's steps (a lower bound: it leaves out "
              "evaluation and the input and output products). Forward + backward: this code's model alone at the job's "
              "shape, as many times as the job computes a gradient, in this process on 1 BLAS thread."]
    if jobs["scale"] != 1:
        lines += ["", f"**Steps scaled by {jobs['scale']:g} (`--job-steps-scale`): not the study's jobs.**"]
    backend = rows[0]["backend"]
    header = ["job", "overrides", "baseline s", f"this code s ({backend['new']})", f"this code s ({backend['new numpy']})",
              f"baseline / {backend['new']}", f"baseline / {backend['new numpy']}", "GEMM bound s",
              f"forward + backward s ({backend['new']})"]
    options = [" ".join(o for o in r["overrides"] if o not in JOB_FIXED) for r in rows]
    return lines + [""] + table(header, [[r["job"], f"`{o}`", f"{r['seconds']['baseline']:.2f}", f"{r['seconds']['new']:.2f}",
                                          f"{r['seconds']['new numpy']:.2f}", f"{r['ratio']['new']:.2f}x",
                                          f"{r['ratio']['new numpy']:.2f}x", f"{r['bound_s']:.2f}", f"{r['model_s']:.2f}"]
                                         for r, o in zip(rows, options)])


def reference_lines(torch_result, jax_result) -> list[str]:
    lines = [""]
    if torch_result:
        lines += [f"torch {torch_result['version']} {torch_result['where']} ({torch_result['threads']} thread(s)): the module "
                  "(nn.RNN(tanh), nn.LSTM, nn.GRU) in float64 and nn.Linear on every step, autograd backward of the last step's loss."]
    else:
        lines += [f"torch not available: pass --torch-python or set ${TORCH_ENV} to an interpreter that has it."]
    if jax_result:
        lines += ["", f"JAX {jax_result['version']} {jax_result['where']} ({', '.join(jax_result['devices'])}, gradients in "
                  f"{jax_result.get('dtype')}): `jax.jit(jax.grad(loss))` of a `lax.scan` tanh RNN with the same D = {CORE_D}, "
                  f"O = {CORE_O} output layer and the loss at the last step, `block_until_ready`, after compiling; one thread: "
                  f"{jax_result['pinning']}."]
    else:
        lines += ["", f"JAX not available: pass --jax-python or set ${JAX_ENV} to an interpreter that has it."]
    return lines


def core_section(core_table, threads, torch_result, jax_result) -> list[str]:
    lines = ["", "## Core: forward + backward, tanh, float64, loss at the last step", "",
             f"D = {CORE_D}, O = {CORE_O} (the adding problem), the workspace reused. GEMM bound: the 2T recurrent (B,H)@(H,H) "
             "products and the (H,TB)@(TB,H) weight-gradient product alone, timed in the same run. GFLOP/s counts the matrix "
             f"products of forward and backward. BLAS threads: {threads} (`--threads`).", ""]
    rows = [[r["shape"], ms(r["core_s"]), f"{r['gflops']:.1f}", ms(r["gemm_s"]), f"{100 * r['bound_fraction']:.0f}%",
             ms(r["torch_s"]), ratio(r["core_s"], r["torch_s"]), ms(r["jax_s"]), ratio(r["core_s"], r["jax_s"])] for r in core_table]
    lines += table(["(T, B, H)", "core ms", "GFLOP/s", "GEMM bound ms", "of bound", "torch ms", "core / torch", "JAX ms",
                    "core / JAX"], rows)
    return lines + reference_lines(torch_result, jax_result)


def cells_section(cell_table) -> list[str]:
    lines = ["", "## Gated cells and normalization: forward + backward, float64, loss at the last step", "",
             "The same problem through `rnngrad.nn.model.forward` / `backward` with `cell=` and `norm=` (tanh for the rnn "
             "cells), the workspace reused; torch's nn.LSTM and nn.GRU as above (it has no normalized RNN module). GEMM "
             "bound: as for the core with G gates, (B,H)@(H,GH) and (H,TB)@(TB,GH).", ""]
    return lines + table(["model", "(T, B, H)", "ours ms", "GEMM bound ms", "of bound", "torch ms", "ours / torch"],
                         [[r["model"], r["shape"], ms(r["s"]), f"{ms(r['gemm_s'])} (G = {r['gates']})",
                           f"{100 * r['gemm_s'] / r['s']:.0f}%", ms(r["torch_s"]), ratio(r["s"], r["torch_s"])] for r in cell_table])


def instruments_section(instruments, steps) -> list[str]:
    lines = ["", "## Instruments", "",
             f"Runs of {steps} steps with the instruments at an interval (`--steps`; eval only at the ends; 1 BLAS thread, as in a sweep's worker): the "
             "median step without the interval instruments, and the median extra time of the steps with them, spread over "
             "the interval; the every-step norms through time timed on their own. "
             "Bare step = the step without any instrument.", ""]
    intervals = list(instruments[0]["all_pct"])
    return lines + table(["run", "bare step ms", "norms through time", *(f"all instruments, interval {i}" for i in intervals)],
                         [[r["run"], f"{r['bare_ms']:.2f}", f"{r['norms_pct']:.1f}%", *(f"{r['all_pct'][i]:.1f}%" for i in intervals)]
                          for r in instruments])


def mlflow_section(mlflow) -> list[str]:
    lines = ["", "## MLflow and start-up", "",
             "Runs of the default config (1000 steps) as a sweep's job runs them, into a temporary SQLite store. Logging = "
             "run creation with its params + every MLflow call of the logger (batched metrics, the artifacts at the end, "
             "tags, termination). Start-up = config composition + everything in `run()` outside the training loop.", ""]
    return lines + table(["", "run s", "logging s", "logging share", "of which log_batch s", "artifacts s", "compose s", "start-up s"],
                         [[label, f"{r['run_s']:.2f}", f"{r['logging_s']:.3f}", f"{r['share_pct']:.1f}%", f"{r['log_batch_s']:.3f}",
                           f"{r['artifacts_s']:.3f}", f"{r['compose_s']:.3f}", f"{r['overhead_s']:.3f}"]
                          for label, r in (("median of later runs", mlflow), ("first run in the process", mlflow["first"]))])


def sweeps_section(sweeps, study) -> list[str]:
    lines = ["", "## Sweeps", ""]
    if sweeps is None:
        lines += ["Not measured (--skip-sweeps)."]
    else:
        n, shard = study_jobs(), sweeps["shard"].split("/")
        what = (f"the default study, all {n} jobs (`experiment=study`)" if shard[1] == "1" else
                f"a slice of the default study (`{' '.join(sweep_arguments(sweeps['shard']))}`: one job in {shard[1]} of its {n}, "
                f"{int(sweeps['one']['jobs'])} jobs)")
        lines += [f"The same sweep, {what}, with `hydra.launcher.n_jobs=1` and `=2`, "
                  "each in a subprocess into its own store; steps counted from the runs (tag steps_done). "
                  f"Parallel workers get {sweeps['worker_threads']} BLAS thread(s) each (joblib's loky backend sets the BLAS "
                  f"thread variables to cores // n_jobs; see conf/config.yaml); the single-worker sweep runs in the main process "
                  f"with {sweeps['serial_threads']}.", ""]
        order = ", ".join(map(str, sweep_order(sweeps["repeats"])))
        lines += [("One sweep each" if sweeps["repeats"] == 1 else f"Medians of {sweeps['repeats']} sweeps each")
                  + f", run in the order {order} workers (`--sweep-shard`, `--sweep-repeats`).", ""]
        lines += table(["workers", "jobs", "training steps", "wall s", "steps / s", "before the first job s",
                        "first start to last end s", "steps / s there", "after the last job s", "sum of the runs' own times s"],
                       [[n, int(s["jobs"]), int(s["steps"]), f"{s['wall_s']:.1f}", f"{s['steps_per_s']:.0f}", f"{s['before_s']:.1f}",
                         f"{s['span_s']:.1f}", f"{s['steady_steps_per_s']:.0f}", f"{s['after_s']:.1f}", f"{s['run_s']:.1f}"]
                        for n, s in (("1", sweeps["one"]), ("2", sweeps["two"]))])
        lines += ["", f"Speed-up with 2 workers: {sweeps['steady_speedup']:.2f}x while jobs run, {sweeps['speedup']:.2f}x over "
                  "the whole wall time. Before the first job: Python and imports, composing and checking every job (on the "
                  "workers when there are two, after starting them), creating the store and the parent run. After the last: "
                  "closing the parent run, stopping the workers, the interpreter's exit. The runs' own times (MLflow's start to end "
                  "of each run, summed) show whether a job itself ran slower with 1 worker or with 2."]
    return lines + ["", f"Default study (`python -m rnngrad.train -m experiment=study`, {study_jobs()} jobs): "
                    + (f"{study['wall_s']:.0f} s wall ({study['source']})" if study else "not measured (pass --study-seconds or --run-study)")
                    + (f", {int(study['steps'])} training steps, {study['steps_per_s']:.0f} steps/s." if study and "steps" in study else ".")]


def float32_section(float32) -> list[str]:
    lines = ["", "## float32 against float64", "",
             "`model.dtype=float32` runs the same code in float32. ||dL/ds_t|| at initialization on the adding problem "
             "(T = 100, H = 64, as the study's init grid): the first distance from the loss at which float32 gives exactly 0 "
             "while float64 still measures a positive norm (float32's smallest subnormal is 1.4e-45, float64's 4.9e-324).", ""]
    return lines + table(["activation", "init", "rho", "float32 is 0 from distance", "float64 there", "float64 at distance 99"],
                         [[r["activation"], r["init"], r["rho"], r["distance"] if r["distance"] is not None else "never",
                           f"{r['float64_there']:.2e}" if r["float64_there"] is not None else "-", f"{r['float64_at_T']:.2e}"]
                          for r in float32])


def report(info, m, sweeps, study, goals, seconds) -> str:
    """reports/bench.md: the machine and the targets, then one section per benchmark."""
    sections = [head_section(info, goals, seconds), jobs_section(m["jobs"]),
                core_section(m["core_table"], m["threads"], m["torch_result"], m["jax_result"]), cells_section(m["cell_table"]),
                instruments_section(m["instruments"], m["instrument_steps"]), mlflow_section(m["mlflow"]), sweeps_section(sweeps, study),
                float32_section(m["float32"])]
    return "\n".join(line for section in sections for line in section) + "\n"


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="repeats per in-process timing (medians)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads for everything timed in this process, and torch's threads (default 1: see bench.md)")
    parser.add_argument("--torch-python", help=f"an interpreter with torch (default: this one if it has torch, else ${TORCH_ENV})")
    parser.add_argument("--jax-python", help=f"an interpreter with JAX (default: ${JAX_ENV}, else JAX is reported not available)")
    parser.add_argument("--baseline", default=BASELINE, help=f"the revision the study jobs are compared with (default {BASELINE})")
    parser.add_argument("--job-repeats", type=int, default=3, help="timed runs per study job and code (medians)")
    parser.add_argument("--job-steps-scale", type=float, default=1.0,
                        help="scale the study jobs' train.steps (default 1: the study's jobs; less for a quick try)")
    parser.add_argument("--skip-jobs", action="store_true", help="do not time the study jobs against the baseline")
    parser.add_argument("--steps", type=int, default=300, help="training steps per instrument-cost run")
    parser.add_argument("--mlflow-runs", type=int, default=3, help="default-config runs for the MLflow share (after a first one)")
    parser.add_argument("--skip-sweeps", action="store_true", help="do not run the 1- and 2-worker sweeps")
    parser.add_argument("--sweep-shard", default=SWEEP_SHARD,
                        help=f"the slice i/n of the study they run (default {SWEEP_SHARD}: the whole study, ~20 min for both)")
    parser.add_argument("--sweep-repeats", type=int, default=1, help="sweeps per worker count (medians), in the order 1, 2, 2, 1, ...")
    parser.add_argument("--study-seconds", type=float, help="the default study's wall time, measured elsewhere")
    parser.add_argument("--run-study", action="store_true", help="run the default study (hundreds of jobs: minutes) and time it")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench.md")
    return parser.parse_args()


def print_models(core_table, cell_table, torch_result, jax_result) -> None:
    for r in core_table:
        print(f"core {r['shape']}: {ms(r['core_s'])} ms, {100 * r['bound_fraction']:.0f}% of the GEMM bound "
              f"({ms(r['gemm_s'])} ms), torch {ms(r['torch_s'])} ms, JAX {ms(r['jax_s'])} ms", flush=True)
    for r in cell_table:
        print(f"{r['model']} {r['shape']}: {ms(r['s'])} ms, torch {ms(r['torch_s'])} ms", flush=True)
    print(f"torch: {torch_result['version'] if torch_result else 'not available'}; "
          f"JAX: {jax_result['version'] if jax_result else 'not available'}", flush=True)


def in_process(args) -> dict:
    """Every benchmark that runs in this process, with `args.threads` BLAS threads (default 1: what each
    worker of a parallel sweep runs with, see bench.md), and the references it starts beside it."""
    with threadpool_limits(args.threads, user_api="blas"):
        threads = blas_threads()
        before = time_models(args.repeats)
        torch_result = bench_torch(torch_python(args.torch_python), args.repeats)
        jax_result = bench_jax(args.jax_python or os.environ.get(JAX_ENV), args.repeats)
        times = model_medians([before, time_models(args.repeats)])  # before and after the references: the same machine state
        core_table, cell_table = core_rows(times, torch_result, jax_result), cell_rows(times, torch_result)
        print_models(core_table, cell_table, torch_result, jax_result)
        default_interval = compose([]).train.diag_interval
        intervals = sorted({default_interval, RECOMMENDED_INTERVAL})
        steps = max(args.steps, 2 * intervals[-1] + 1)  # at least two instrumented steps per run
        instruments = bench_instruments(steps, max(3, args.repeats // 2), intervals)
        for r in instruments:
            print(f"instruments {r['run']}: bare {r['bare_ms']:.2f} ms, norms {r['norms_pct']:.1f}%, all "
                  + ", ".join(f"{v:.1f}% at interval {i}" for i, v in r["all_pct"].items()), flush=True)
        mlflow = bench_mlflow(args.mlflow_runs)
        print(f"mlflow: share {mlflow['share_pct']:.1f}%, start-up {mlflow['overhead_s']:.3f} s per job", flush=True)
        return {"threads": threads, "torch_result": torch_result, "jax_result": jax_result, "core_table": core_table,
                "cell_table": cell_table, "default_interval": default_interval, "instruments": instruments, "instrument_steps": steps,
                "mlflow": mlflow, "float32": bench_float32()}


def main() -> None:
    args = arguments()
    start = time.perf_counter()
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['blas']}, numba {info['numba']}, backend {info['backend']}, "
          f"load {info['load'][0]:.2f}", flush=True)
    jobs = None if args.skip_jobs else bench_jobs(args.baseline, args.job_repeats, args.job_steps_scale)
    m = {**in_process(args), "jobs": jobs}
    sweeps = None if args.skip_sweeps else bench_sweeps(args.sweep_shard, args.sweep_repeats)
    if sweeps:
        print(f"sweeps: {sweeps['one']['steps_per_s']:.0f} -> {sweeps['two']['steps_per_s']:.0f} steps/s "
              f"({sweeps['speedup']:.2f}x; {sweeps['steady_speedup']:.2f}x while jobs run)", flush=True)
    study = bench_study(args.study_seconds, args.run_study, sweeps)
    info["load_end"] = os.getloadavg()
    goals = targets(m, sweeps)
    text = report(info, m, sweeps, study, goals, time.perf_counter() - start)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print()
    for g in goals:
        print(f"{g.verdict:5s} {g.what}: {g.measured} (target {g.target})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
