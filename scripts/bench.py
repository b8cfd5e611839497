"""The performance benchmark: prints a table and writes reports/bench.md.

    python scripts/bench.py [--torch-python /path/to/python] [--sweep-shard 0/8 --sweep-repeats 2]

By default the sweep comparison runs the whole default study with 1 worker, then with 2 (~20 min in all):
the study's throughput is what the target is about, and the 2-worker run is the study's wall time. A slice
(`--sweep-shard 0/8`: every 8th job) is quicker, but its fixed start (imports, the store) weighs more.

Every figure is measured by this run, side by side in one process (or in subprocesses it starts at the
same time), as medians over repeats; the machine (cores, BLAS, load) is described with the figures.
It is a benchmark, not a test: nothing here fails, each target is reported PASS or FAIL.

Sections: the core's forward + backward against the matrix products any BPTT of the same shapes does
(the GEMM bound) and against torch nn.RNN; the cost of the per-step instruments; the share of a run
spent in MLflow and the per-job start-up; sweep throughput with 1 and 2 workers on a slice of the study; where float32
underflows a vanishing gradient that float64 still measures; the default study's wall time.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from rnngrad import config, core, diagnostics
from rnngrad.losses import make_loss
from rnngrad.report.markdown import table as markdown_table
from rnngrad.tasks import make_task
from rnngrad.training import Callback, make_run_task, train

ROOT = Path(__file__).resolve().parents[1]
CORE_SHAPES = [(200, 32, 128), (200, 128, 256)]  # (T, B, H)
CORE_D, CORE_O = 2, 1  # the adding problem's input and output sizes
TORCH_ENV = "RNNGRAD_TORCH_PYTHON"
RECOMMENDED_INTERVAL = 100  # the diag_interval that keeps the instruments within 10% (see bench.md)


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: first-touch allocations, BLAS thread start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def blas_threads() -> int:
    return next(info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas")


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    blas = [f"{i['internal_api']} {i['version']} ({i.get('architecture')}, {i['num_threads']} threads, "
            f"{i.get('threading_layer')})" for i in threadpool_info() if i["user_api"] == "blas"]
    return {
        "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
        "blas": "; ".join(blas),
        "env": {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS",
                                           "OMP_NUM_THREADS") if k in os.environ},
        "load": os.getloadavg(),
    }


# --------------------------------------------------------------------------------------------
# The core against the GEMM bound and torch
# --------------------------------------------------------------------------------------------


def core_problem(T: int, B: int, H: int):
    """A tanh RNN in float64 with its input and a loss at the last step only."""
    rng = np.random.default_rng(0)
    params = core.init_params(CORE_D, H, CORE_O, init="orthogonal", rng=rng)
    x = rng.standard_normal((T, B, CORE_D))
    dout = np.zeros((T, B, CORE_O))
    dout[-1] = rng.standard_normal((B, CORE_O))
    return params, x, dout


def core_flops(T: int, B: int, H: int) -> float:
    """The matrix-product flops of forward + backward: x U, s W, s V; then ds W^T (T-1 steps), dU, dW, dV."""
    D, O = CORE_D, CORE_O
    return 2.0 * T * B * (D * H + H * H + H * O) + 2.0 * (T - 1) * B * H * H + 2.0 * T * B * H * (D + H + O)


def time_core(repeats: int) -> dict:
    """Seconds of the core's forward + backward and of the GEMM bound per shape, measured interleaved."""
    times = {}
    for T, B, H in CORE_SHAPES:
        params, x, dout = core_problem(T, B, H)
        rng = np.random.default_rng(1)
        s, W, rec = rng.standard_normal((B, H)), params["W"], np.empty((B, H))
        a, d = rng.standard_normal((H, T * B)), rng.standard_normal((T * B, H))

        workspace = core.Workspace()  # as the training loop runs the core: buffers allocated once

        def forward_backward():
            _, cache = core.forward(params, x, activation="tanh", workspace=workspace)
            core.backward(params, cache, dout, workspace=workspace)

        def gemm_bound():  # the products of any BPTT of these shapes: 2T recurrent, one weight gradient
            for _ in range(2 * T):
                np.matmul(s, W, out=rec)
            a @ d

        times[(T, B, H)] = {"core": [], "gemm": []}
        for _ in range(2):
            times[(T, B, H)]["core"].append(median_seconds(forward_backward, repeats))
            times[(T, B, H)]["gemm"].append(median_seconds(gemm_bound, repeats))
    return times


def core_rows(runs: list[dict]) -> list[dict]:
    rows = []
    for shape in CORE_SHAPES:
        t_core = float(np.median([t for run in runs for t in run[shape]["core"]]))
        t_gemm = float(np.median([t for run in runs for t in run[shape]["gemm"]]))
        rows.append({"shape": shape, "core_s": t_core, "gemm_s": t_gemm, "gflops": core_flops(*shape) / t_core / 1e9,
                     "bound_fraction": t_gemm / t_core})
    return rows


TORCH_SCRIPT = r"""
import json, sys, time
import torch
shapes, D, O, threads, repeats = json.loads(sys.argv[1])
torch.set_num_threads(threads)
torch.manual_seed(0)
result = {"version": torch.__version__, "threads": torch.get_num_threads(), "seconds": {}}
for T, B, H in shapes:
    rnn = torch.nn.RNN(D, H, nonlinearity="tanh", dtype=torch.float64)
    linear = torch.nn.Linear(H, O, dtype=torch.float64)
    x = torch.randn(T, B, D, dtype=torch.float64)
    g = torch.randn(B, O, dtype=torch.float64)
    def step():
        rnn.zero_grad(set_to_none=True)
        linear.zero_grad(set_to_none=True)
        s, _ = rnn(x)
        loss = (linear(s)[-1] * g).sum()  # outputs at every step, the loss at the last one
        loss.backward()
    step()
    times = []
    for _ in range(3 * repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    times.sort()
    result["seconds"][f"{T},{B},{H}"] = times[len(times) // 2]
print(json.dumps(result))
"""


def torch_python(requested: str | None) -> str | None:
    """The interpreter that has torch: --torch-python, else this one if it can import torch, else $RNNGRAD_TORCH_PYTHON."""
    if requested:
        return requested
    if importlib.util.find_spec("torch") is not None:
        return sys.executable
    return os.environ.get(TORCH_ENV)


def bench_torch(python: str | None, repeats: int) -> dict | None:
    if python is None:
        return None
    arg = json.dumps([CORE_SHAPES, CORE_D, CORE_O, blas_threads(), repeats])  # torch gets numpy's BLAS threads
    done = subprocess.run([python, "-c", TORCH_SCRIPT, arg], capture_output=True, text=True)
    if done.returncode != 0:
        print(f"torch at {python} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


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
# The report
# --------------------------------------------------------------------------------------------


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def targets(core_table, torch_result, instruments, default_interval, mlflow, sweeps) -> list[tuple[str, str, str]]:
    small, large = core_table
    rows = []
    if torch_result is not None:
        ratio = small["core_s"] / torch_result["seconds"]["200,32,128"]
        rows.append(("core (200, 32, 128) vs torch nn.RNN float64", "<= 0.35x torch's time", f"{ratio:.2f}x", verdict(ratio <= 0.35)))
    else:
        rows.append(("core (200, 32, 128) vs torch nn.RNN float64", "<= 0.35x torch's time", "torch not available", verdict(None)))
    rows.append(("core (200, 32, 128): fraction of the GEMM bound", ">= 60%", f"{100 * small['bound_fraction']:.0f}%",
                 verdict(small["bound_fraction"] >= 0.6)))
    rows.append(("core (200, 128, 256): fraction of the GEMM bound", ">= 50%", f"{100 * large['bound_fraction']:.0f}%",
                 verdict(large["bound_fraction"] >= 0.5)))
    for interval in instruments[0]["all_pct"]:
        worst = max(instruments, key=lambda r: r["all_pct"][interval])
        label = "default" if interval == default_interval else "recommended"
        rows.append((f"instruments at diag_interval={interval} ({label}; worst run: {worst['run']})", "<= 10% over a bare step",
                     f"{worst['all_pct'][interval]:.1f}%", verdict(worst["all_pct"][interval] <= 10)))
    worst_norms = max(instruments, key=lambda r: r["norms_pct"])
    rows.append((f"norms through time alone (worst run: {worst_norms['run']})", "<= 3% over a bare step",
                 f"{worst_norms['norms_pct']:.1f}%", verdict(worst_norms["norms_pct"] <= 3)))
    rows.append(("MLflow logging, default run", "<= 3% of the run's wall time", f"{mlflow['share_pct']:.1f}%",
                 verdict(mlflow["share_pct"] <= 3)))
    rows.append(("per-job start-up (compose, run creation, final flush)", "<= 0.5 s", f"{mlflow['overhead_s']:.2f} s",
                 verdict(mlflow["overhead_s"] <= 0.5)))
    if sweeps is not None:
        rows.append(("sweep throughput while jobs run, 2 workers vs 1", ">= 1.8x", f"{sweeps['steady_speedup']:.2f}x",
                     verdict(sweeps["steady_speedup"] >= 1.8)))
        rows.append(("sweep throughput over the whole wall time, 2 workers vs 1", ">= 1.8x", f"{sweeps['speedup']:.2f}x",
                     verdict(sweeps["speedup"] >= 1.8)))
    return rows


def notes(core_table, torch_result, mlflow) -> list[str]:
    small = core_table[0]
    lines = []
    if torch_result:
        floor = small["gemm_s"] / torch_result["seconds"]["200,32,128"]
        lines.append(f"- core against torch at (200, 32, 128): the GEMM bound alone takes {floor:.2f}x torch's time, so 0.35x "
                     f"would need the core at {100 * floor / 0.35:.0f}% of the bound. Beyond the bound the core does tanh on "
                     "every state, one element-wise pass per step each way, the input and output products and f'(a) for all "
                     "steps at once; with (B, H) = (32, 128) each step's product is short enough for numpy's per-call "
                     "overhead to count.")
    rest = mlflow["logging_s"] - mlflow["log_batch_s"] - mlflow["artifacts_s"]
    lines.append(f"- MLflow: of a {mlflow['run_s']:.1f} s run, {mlflow['logging_s']:.2f} s are logging: {mlflow['log_batch_s']:.2f} s "
                 f"inside log_batch calls, {mlflow['artifacts_s']:.2f} s in the artifacts at the end (parquet, heatmap, upload) "
                 f"and {rest:.2f} s in the logger's other MLflow calls (run creation, waiting for asynchronous batches, "
                 "termination); they, and most of the start-up, live in the tracking layer (rnngrad.app.tracking), not in the "
                 "training loop.")
    return lines


def table(header: list[str], rows: list[list]) -> list[str]:
    """A markdown table as lines (the report's writer)."""
    return markdown_table(rows, header).split("\n")


def head_section(info, goals, core_table, torch_result, mlflow, seconds) -> list[str]:
    lines = ["# Benchmark", "", f"Generated by `scripts/bench.py` in {seconds:.0f} s. Every figure below was measured by that run, "
             "side by side, as medians over repeats. A benchmark, not a test: targets are reported, not enforced.", "",
             "## Machine", ""]
    lines += [f"- CPU: {info['cpu']}, {info['cores']} cores", f"- BLAS: {info['blas']}",
              f"- Python {info['python']}, numpy {info['numpy']}",
              f"- BLAS-related environment: {info['env'] or 'none set'}",
              f"- load average at start {info['load'][0]:.2f}, at end {info['load_end'][0]:.2f} "
              "(other work on the machine inflates every figure; ratios measured side by side suffer least)", ""]
    lines += ["## Targets", ""] + table(["what", "target", "measured", "verdict"], [list(g) for g in goals]) + [""]
    return lines + ["What the failures come from, in this run's figures:", ""] + notes(core_table, torch_result, mlflow) + [""]


def core_section(core_table, threads, torch_result, torch_from) -> list[str]:
    lines = ["## Core: forward + backward, tanh, float64, loss at the last step", "",
             f"D = {CORE_D}, O = {CORE_O} (the adding problem). GEMM bound: the 2T recurrent (B,H)@(H,H) products and the "
             "(H,TB)@(TB,H) weight-gradient product alone, timed in the same run. GFLOP/s counts the matrix products of "
             f"forward and backward. BLAS threads: {threads} (`--threads`; see below).", ""]
    rows = []
    for r in core_table:
        key = ",".join(map(str, r["shape"]))
        t_torch = torch_result["seconds"].get(key) if torch_result else None
        rows.append([r["shape"], f"{1e3 * r['core_s']:.1f}", f"{r['gflops']:.1f}", f"{1e3 * r['gemm_s']:.1f}",
                     f"{100 * r['bound_fraction']:.0f}%", f"{1e3 * t_torch:.1f}" if t_torch else "-",
                     f"{r['core_s'] / t_torch:.2f}x" if t_torch else "-"])
    lines += table(["(T, B, H)", "core ms", "GFLOP/s", "GEMM bound ms", "of bound", "torch ms", "core / torch"], rows)
    if torch_result:
        return lines + ["", f"torch {torch_result['version']} ({torch_result['threads']} threads, interpreter {torch_from}): "
                        "nn.RNN(tanh) float64 and nn.Linear on every step, autograd backward of the last step's loss."]
    return lines + ["", "torch not available: pass --torch-python or set $RNNGRAD_TORCH_PYTHON to an interpreter that has it."]


def instruments_section(instruments) -> list[str]:
    lines = ["", "## Instruments", "",
             "Runs with the instruments at an interval (eval only at the ends; 1 BLAS thread, as in a sweep's worker): the "
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


def report(info, core_table, threads, torch_result, torch_from, instruments, mlflow, sweeps, study, float32, goals, seconds) -> str:
    """reports/bench.md: the machine and the targets, then one section per benchmark."""
    sections = [head_section(info, goals, core_table, torch_result, mlflow, seconds),
                core_section(core_table, threads, torch_result, torch_from), instruments_section(instruments),
                mlflow_section(mlflow), sweeps_section(sweeps, study), float32_section(float32)]
    return "\n".join(line for section in sections for line in section) + "\n"


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="repeats per timing (medians)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads for everything timed in this process, and torch's threads (default 1: see bench.md)")
    parser.add_argument("--torch-python", help=f"an interpreter with torch (default: this one if it has torch, else ${TORCH_ENV})")
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


def in_process(args) -> dict:
    """Every benchmark that runs in this process, with `args.threads` BLAS threads (default 1: what each
    worker of a parallel sweep runs with, see bench.md)."""
    with threadpool_limits(args.threads, user_api="blas"):
        threads = blas_threads()
        before = time_core(args.repeats)
        torch_from = torch_python(args.torch_python)
        torch_result = bench_torch(torch_from, args.repeats)
        core_table = core_rows([before, time_core(args.repeats)])  # before and after torch: the same machine state
        for r in core_table:
            print(f"core {r['shape']}: {1e3 * r['core_s']:.1f} ms, {r['gflops']:.1f} GFLOP/s, "
                  f"{100 * r['bound_fraction']:.0f}% of the GEMM bound ({1e3 * r['gemm_s']:.1f} ms)", flush=True)
        print(f"torch: {torch_result['seconds'] if torch_result else 'not available'}", flush=True)
        default_interval = compose([]).train.diag_interval
        instruments = bench_instruments(args.steps, max(3, args.repeats // 2), [default_interval, RECOMMENDED_INTERVAL])
        for r in instruments:
            print(f"instruments {r['run']}: bare {r['bare_ms']:.2f} ms, norms {r['norms_pct']:.1f}%, all "
                  + ", ".join(f"{v:.1f}% at interval {i}" for i, v in r["all_pct"].items()), flush=True)
        mlflow = bench_mlflow(args.mlflow_runs)
        print(f"mlflow: share {mlflow['share_pct']:.1f}%, start-up {mlflow['overhead_s']:.3f} s per job", flush=True)
        return {"threads": threads, "torch_from": torch_from, "torch_result": torch_result, "core_table": core_table,
                "default_interval": default_interval, "instruments": instruments, "mlflow": mlflow,
                "float32": bench_float32()}


def main() -> None:
    args = arguments()
    start = time.perf_counter()
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['blas']}, load {info['load'][0]:.2f}", flush=True)
    m = in_process(args)
    sweeps = None if args.skip_sweeps else bench_sweeps(args.sweep_shard, args.sweep_repeats)
    if sweeps:
        print(f"sweeps: {sweeps['one']['steps_per_s']:.0f} -> {sweeps['two']['steps_per_s']:.0f} steps/s "
              f"({sweeps['speedup']:.2f}x; {sweeps['steady_speedup']:.2f}x while jobs run)", flush=True)
    study = bench_study(args.study_seconds, args.run_study, sweeps)
    info["load_end"] = os.getloadavg()
    goals = targets(m["core_table"], m["torch_result"], m["instruments"], m["default_interval"], m["mlflow"], sweeps)
    text = report(info, m["core_table"], m["threads"], m["torch_result"], m["torch_from"], m["instruments"], m["mlflow"],
                  sweeps, study, m["float32"], goals, time.perf_counter() - start)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print()
    for what, target, measured, ok in goals:
        print(f"{ok:5s} {what}: {measured} (target {target})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
