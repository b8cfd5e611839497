"""The `grids` sweeper: Hydra's basic sweeper, extended to a union of named grids.

`hydra.sweeper.params` is one cartesian grid, as for the basic sweeper. `hydra.sweeper.grids` maps
names to more such grids; the sweep runs the union of all of them, so the study preset can include
the presets of its questions (their `grids` entries merge) and run everything in one sweep.
Command-line overrides apply to every job and win over grid values. `hydra.sweeper.shard=i/n` runs
every n-th job starting at the i-th (0 <= i < n): a study split over n machines or sessions.

Before launching anything it composes every job's config and checks it (`rnngrad.train.check_job`):
a bad value anywhere fails the whole sweep before a single run, store or experiment is created.
On the joblib launcher the checks run on the launcher's own worker processes, which the jobs then
reuse: composing a job takes Hydra ~0.1 s, so checking the study's hundreds of jobs in one process
would leave the other cores idle, and the workers' start-up (imports, MLflow included) is paid while
the checks run. The joblib launcher would then compose every job a second time; instead the sweeper
hands each job the config its check composed (`launch_composed`, the launcher's own steps otherwise).
Other launchers (basic, submitit, Slurm) get the jobs' overrides and compose them as usual.
Jobs launch longest first (the check's work estimate), so that a sweep does not end with one worker
finishing a long job while the others idle.
"""

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)


@dataclass
class GridsSweeperConf:
    _target_: str = "hydra_plugins.rnngrad_sweeper.grids_sweeper.GridsSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None
    grids: Optional[Dict[str, Any]] = None
    shard: Optional[str] = None  # "i/n": every n-th job from the i-th


ConfigStore.instance().store(group="hydra/sweeper", name="grids", node=GridsSweeperConf, provider="rnngrad")


def expand_grids(params: Optional[Dict[str, str]], grids: Optional[Dict[str, Any]], arguments: List[str],
                 parser: OverridesParser) -> List[List[str]]:
    """Every job's override list: the union over the named grids (and the `params` grid, if any);
    the command-line arguments apply to every job and win over grid values."""
    all_grids = list((grids or {}).values())
    if params or not all_grids:
        all_grids.insert(0, params or {})
    jobs: List[List[str]] = []
    for grid in all_grids:
        conf = [f"{key}={value}" for key, value in grid.items()] + list(arguments)
        for batch in BasicSweeper.split_arguments(parser.parse_overrides(conf), None):
            jobs.extend(batch)
    return jobs


def parse_shard(shard: Optional[str]) -> Optional[Tuple[int, int]]:
    """'i/n' -> (i, n), with 0 <= i < n; None -> None. Raises ValueError naming the valid form."""
    if shard is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(shard))
    if not match or not int(match[2]) > int(match[1]) >= 0:
        raise ValueError(f"hydra.sweeper.shard must be 'i/n' with 0 <= i < n (e.g. 0/4), got {shard!r}")
    return int(match[1]), int(match[2])


def check_job(idx: int, overrides: Sequence[str], hydra_context: Any, config: DictConfig,
              singleton_state: Dict[Any, Any]) -> Tuple[Any, Optional[DictConfig]]:
    """Compose one job's config as the launcher would and check it (in a launcher worker or in-process).

    Returns (rnngrad.train.JobCheck, the composed config, or None if it did not compose)."""
    from hydra.core.singleton import Singleton
    from hydra.core.utils import setup_globals

    from rnngrad.train import JobCheck
    from rnngrad.train import check_job as check  # the project's side

    setup_globals()
    Singleton.set_state(singleton_state)
    try:
        cfg = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    except Exception as err:  # noqa: BLE001  Hydra's composition errors: their causes name the valid choices
        messages, cause = [], err
        while cause is not None and len(messages) < 5:
            text = str(cause).strip()
            if text and text not in messages:
                messages.append(text)
            cause = cause.__cause__ or cause.__context__
        return JobCheck("; ".join(messages) or type(err).__name__), None
    return check(cfg), cfg


def run_composed(idx: int, sweep_config: DictConfig, hydra_context: Any, task_function: Any,
                 singleton_state: Dict[Any, Any]) -> Any:
    """The joblib launcher's `execute_job` for a config that is already composed."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton
    from hydra.core.utils import run_job, setup_globals

    setup_globals()
    Singleton.set_state(singleton_state)
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
        sweep_config.hydra.job.num = idx
    HydraConfig.instance().set_config(sweep_config)
    return run_job(hydra_context=hydra_context, config=sweep_config, task_function=task_function,
                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")


def joblib_options(launcher: Any) -> Optional[Dict[str, Any]]:
    """The joblib launcher's Parallel arguments, processed as it processes them; None for other launchers."""
    joblib_cfg = getattr(launcher, "joblib", None)
    if joblib_cfg is None:
        return None
    from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg

    options = dict(joblib_cfg, backend="loky")  # the launcher hard-codes loky too
    process_joblib_cfg(options)
    return options


def launch_composed(launcher: Any, configs: Sequence[DictConfig], initial_job_idx: int) -> List[Any]:
    """The joblib launcher's `launch` (same log, sweep directory and Parallel arguments), on composed configs."""
    from hydra.core.singleton import Singleton
    from hydra.core.utils import configure_log, setup_globals
    from joblib import Parallel, delayed

    setup_globals()
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    options = joblib_options(launcher)
    log.info("Joblib.Parallel(%s) is launching %d jobs", ",".join(f"{k}={v}" for k, v in options.items()), len(configs))
    log.info("Launching jobs, sweep output dir : %s", sweep_dir)
    for idx, cfg in enumerate(configs):
        log.info("\t#%d : %s", initial_job_idx + idx, " ".join(cfg.hydra.overrides.task))
    state = Singleton.get_state()
    return Parallel(**options)(
        delayed(run_composed)(initial_job_idx + idx, cfg, launcher.hydra_context, launcher.task_function, state)
        for idx, cfg in enumerate(configs))


class GridsSweeper(BasicSweeper):
    def __init__(self, max_batch_size: Optional[int] = None, params: Optional[Dict[str, str]] = None,
                 grids: Optional[Dict[str, Any]] = None, shard: Optional[str] = None) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.grids = dict(grids or {})
        self.shard = shard

    def _check_all(self, jobs: List[List[str]]) -> List[Tuple[Any, Optional[DictConfig]]]:
        from hydra.core.singleton import Singleton

        state = Singleton.get_state()
        # exactly the launcher's Parallel arguments, so that joblib hands the jobs the same (reusable)
        # worker processes instead of starting new ones
        options = joblib_options(self.launcher)
        if options is not None and len(jobs) > 1:
            from joblib import Parallel, cpu_count, delayed

            n_jobs = options.get("n_jobs") or 1
            if (cpu_count() if n_jobs < 0 else n_jobs) > 1:
                return Parallel(**options)(
                    delayed(check_job)(i, o, self.hydra_context, self.config, state) for i, o in enumerate(jobs))
        return [check_job(i, o, self.hydra_context, self.config, state) for i, o in enumerate(jobs)]

    def sweep(self, arguments: List[str]) -> Any:
        from rnngrad.train import config_errors_exit, open_sweep  # the project's side

        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        jobs = expand_grids(self.params, self.grids, arguments, parser)
        with config_errors_exit():
            try:
                shard = parse_shard(self.shard)
            except ValueError as err:
                from rnngrad.config import ConfigError

                raise ConfigError(str(err)) from None
            if shard is not None:
                jobs = jobs[shard[0]::shard[1]]
            checks, configs = zip(*self._check_all(jobs)) if jobs else ((), ())
            sweep = open_sweep(self.config, jobs, list(checks))
        order = sorted(range(len(jobs)), key=lambda i: -checks[i].cost)  # longest first; stable otherwise
        composed = joblib_options(self.launcher) is not None
        if composed:
            jobs = [configs[i] for i in order]
            for cfg in jobs:
                with open_dict(cfg):
                    cfg.hydra.job.env_set.update(sweep.job_env())
        else:
            jobs = [list(jobs[i]) + sweep.job_overrides() for i in order]
        returns = []
        try:
            initial_job_idx = 0
            for batch in self.split_overrides_to_chunks(jobs, self.max_batch_size):
                if composed:
                    results = launch_composed(self.launcher, batch, initial_job_idx)
                else:
                    results = self.launcher.launch(batch, initial_job_idx=initial_job_idx)
                for r in results:
                    _ = r.return_value  # raises if the job failed
                initial_job_idx += len(batch)
                returns.append(results)
        except BaseException:
            sweep.close("FAILED")
            raise
        sweep.close("FINISHED")
        return returns
