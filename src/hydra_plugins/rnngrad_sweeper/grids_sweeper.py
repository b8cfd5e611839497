"""The `grids` sweeper: Hydra's sweeper interface, over a union of named grids.

`hydra.sweeper.params` is one cartesian grid, as for Hydra's basic sweeper. `hydra.sweeper.grids` maps
names to more such grids; the sweep runs the union of all of them, so the study preset can include
the presets of its questions (their `grids` entries merge) and run everything in one sweep.
Command-line overrides apply to every job and win over grid values. `hydra.sweeper.shard=i/n` runs
every n-th job starting at the i-th (0 <= i < n): a study split over n machines or sessions.

Before launching anything it composes every job's config and checks it (`rnngrad.app.sweep.check_job`):
a bad value anywhere fails the whole sweep before a single run, store or experiment is created.
Composing a job takes Hydra ~0.1 s, so on the joblib launcher the checks run on joblib workers, in a
few chunks of jobs per worker, with the launcher's own Parallel arguments, which makes loky hand the
launcher those same processes afterwards (their start-up, MLflow's import included, is paid while the
checks run). The launcher then gets every job's overrides, as from any sweeper, and composes each job
again in its worker; both compositions read conf/ through `parsed_once`, each YAML file parsed once
per process.
Jobs launch longest first (the check's work estimate), so that a sweep does not end with one worker
finishing a long job while the others idle.

Only Hydra's public plugin API is used (`Sweeper`, `Launcher.launch`, the override parser). Hydra imports
every plugin module when it starts, so the project's side (and MLflow with it) is imported only when
a sweep runs.
"""

import itertools
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.singleton import Singleton
from hydra.core.utils import setup_globals
from hydra.errors import HydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher
from omegaconf import DictConfig

# the joblib arguments that decide whether loky reuses its worker processes
EXECUTOR_OPTIONS = ("n_jobs", "prefer", "require", "verbose", "temp_folder", "max_nbytes", "mmap_mode")
CHUNKS_PER_WORKER = 4  # the checks' tasks per worker: few enough to pickle little, enough to even out
COMPOSE_ERROR_CAUSES = 5  # Hydra's composition errors nest; their causes name the valid choices


@dataclass
class GridsSweeperConf:
    _target_: str = "hydra_plugins.rnngrad_sweeper.grids_sweeper.GridsSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None
    grids: Optional[Dict[str, Any]] = None
    shard: Optional[str] = None  # "i/n": every n-th job from the i-th


ConfigStore.instance().store(group="hydra/sweeper", name="grids", node=GridsSweeperConf, provider="rnngrad")


def cartesian(parser: OverridesParser, arguments: List[str]) -> List[List[str]]:
    """The jobs of one grid: every combination of the sweep overrides' values, keys in first-seen order;
    a later override of a key replaces an earlier one (so the command line wins over the grid)."""
    choices: Dict[str, List[str]] = {}
    for override in parser.parse_overrides(arguments):
        key = override.get_key_element()
        if not override.is_sweep_override():
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            raise HydraException(f"the grids sweeper does not support sweep type {override.value_type.name}: {override.input_line}")
    return [list(job) for job in itertools.product(*choices.values())]


def expand_grids(params: Optional[Dict[str, str]], grids: Optional[Dict[str, Any]], arguments: List[str],
                 parser: OverridesParser) -> List[List[str]]:
    """Every job's override list: the union over the named grids (and the `params` grid, if any);
    the command-line arguments apply to every job and win over grid values."""
    all_grids = list((grids or {}).values())
    if params or not all_grids:
        all_grids.insert(0, params or {})
    return [job for grid in all_grids
            for job in cartesian(parser, [f"{key}={grid_value(value)}" for key, value in grid.items()] + list(arguments))]


def grid_value(value: Any) -> str:
    """A grid's YAML value as an override's value: null (YAML's null, Python's None) and the booleans as
    Hydra's override grammar spells them, not as Python prints them ('None' would be a string)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def parse_shard(shard: Optional[str]) -> Optional[Tuple[int, int]]:
    """'i/n' -> (i, n), with 0 <= i < n; None -> None. Raises ValueError naming the valid form."""
    if shard is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(shard))
    if not match or not int(match[2]) > int(match[1]) >= 0:
        raise ValueError(f"hydra.sweeper.shard must be 'i/n' with 0 <= i < n (e.g. 0/4), got {shard!r}")
    return int(match[1]), int(match[2])


def compose_error(err: Exception) -> str:
    """A composition error and its causes, deduplicated, in one line."""
    messages: List[str] = []
    cause: Optional[BaseException] = err
    while cause is not None and len(messages) < COMPOSE_ERROR_CAUSES:
        text = str(cause).strip()
        if text and text not in messages:
            messages.append(text)
        cause = cause.__cause__ or cause.__context__
    return "; ".join(messages) or type(err).__name__


def check_job(overrides: Sequence[str], hydra_context: HydraContext, config: DictConfig,
              singleton_state: Dict[Any, Any]) -> Any:
    """Compose one job's config as the launcher will and check it (in a joblib worker or in-process).

    Returns rnngrad.app.sweep.JobCheck."""
    from rnngrad.app import sweep

    setup_globals()
    Singleton.set_state(singleton_state)
    try:
        cfg = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    except Exception as err:  # noqa: BLE001  any composition error is this job's, reported with the others
        return sweep.JobCheck(compose_error(err))
    return sweep.check_job(cfg)


def check_jobs(jobs: Sequence[Sequence[str]], hydra_context: HydraContext, config: DictConfig,
               singleton_state: Dict[Any, Any]) -> List[Any]:
    """check_job for each of these jobs, in order."""
    return [check_job(overrides, hydra_context, config, singleton_state) for overrides in jobs]


def executor_options(launcher_cfg: DictConfig) -> Dict[str, Any]:
    """The joblib launcher's arguments that loky compares before reusing its workers, as the launcher
    passes them to joblib.Parallel (loky; a byte count given as a string of digits made an int)."""
    options = {key: launcher_cfg.get(key) for key in EXECUTOR_OPTIONS if key in launcher_cfg}
    if isinstance(options.get("max_nbytes"), str) and options["max_nbytes"].isdigit():
        options["max_nbytes"] = int(options["max_nbytes"])
    return dict(options, backend="loky")


def is_joblib(launcher: Any) -> bool:
    """Whether the launcher is the joblib one. Not isinstance: Hydra's plugin scan executes the plugin
    modules a second time, so the launcher's class is another object than the one imported here."""
    return (type(launcher).__module__, type(launcher).__qualname__) == (JoblibLauncher.__module__, JoblibLauncher.__qualname__)


class GridsSweeper(Sweeper):
    def __init__(self, max_batch_size: Optional[int] = None, params: Optional[Dict[str, str]] = None,
                 grids: Optional[Dict[str, Any]] = None, shard: Optional[str] = None) -> None:
        self.max_batch_size = max_batch_size
        self.params = dict(params or {})
        self.grids = dict(grids or {})
        self.shard = shard
        self.hydra_context: Optional[HydraContext] = None
        self.config: Optional[DictConfig] = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def _check_all(self, jobs: List[List[str]]) -> List[Any]:
        state = Singleton.get_state()
        if is_joblib(self.launcher) and len(jobs) > 1:
            from joblib import Parallel, cpu_count, delayed

            options = executor_options(self.config.hydra.launcher)
            n_jobs = options.get("n_jobs") or 1
            workers = cpu_count() if n_jobs < 0 else n_jobs
            if workers > 1:
                # a few chunks per worker: every task carries the context and the sweep's config, whose
                # pickling costs as much as a check (the study's 276 jobs: 39 s on 2 workers, in 8 chunks 26 s)
                size = -(-len(jobs) // (CHUNKS_PER_WORKER * workers))
                chunks = [jobs[i : i + size] for i in range(0, len(jobs), size)]
                checked = Parallel(**options)(delayed(check_jobs)(c, self.hydra_context, self.config, state) for c in chunks)
                return [check for chunk in checked for check in chunk]
        return check_jobs(jobs, self.hydra_context, self.config, state)

    def _selected_jobs(self, arguments: List[str]) -> List[List[str]]:
        """Every job of the grids, or of this shard of them."""
        from rnngrad.config import ConfigError

        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        jobs = expand_grids(self.params, self.grids, arguments, parser)
        try:
            shard = parse_shard(self.shard)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        return jobs if shard is None else jobs[shard[0]::shard[1]]

    def sweep(self, arguments: List[str]) -> Any:
        from rnngrad.app import console
        from rnngrad.app.main import errors_exit
        from rnngrad.app.sweep import open_sweep, run_jobs
        from rnngrad.config import check_launcher

        console.quiet_libraries(self.config.hydra.verbose)
        with errors_exit():
            check_launcher(self.config.hydra.launcher)
            jobs = self._selected_jobs(arguments)
            checks = self._check_all(jobs)
            sweep = open_sweep(self.config, jobs, checks)
        skipped = list(sweep.skipped.values())
        if sweep.parent_id is None:  # every job finished before: nothing was created, nothing runs
            print(console.summary(sweep.client, sweep.uri, sweep.exp_id, None, skipped), flush=True)
            return []
        # longest first; stable otherwise
        order = sorted(sweep.pending(len(jobs)), key=lambda i: -checks[i].cost)
        jobs = [jobs[i] + sweep.job_overrides() for i in order]
        batch_size = len(jobs) if self.max_batch_size in (None, -1) else self.max_batch_size
        # issue 16: signals, a failed store and the end-of-sweep report are rnngrad.app.sweep.run_jobs's
        return run_jobs(self.launcher, jobs, batch_size, sweep)
