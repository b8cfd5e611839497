"""The `grids` sweeper: Hydra's basic sweeper, extended to a union of named grids.

`hydra.sweeper.params` is one cartesian grid, as for the basic sweeper. `hydra.sweeper.grids` maps
names to more such grids; the sweep runs the union of all of them, so the study preset can include
the presets of its questions (their `grids` entries merge) and run everything in one sweep.
Command-line overrides apply to every job and win over grid values.

Before launching anything it composes every job's config and validates it (`rnngrad.train.open_sweep`):
a bad value anywhere fails the whole sweep before a single run, store or experiment is created.
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser


@dataclass
class GridsSweeperConf:
    _target_: str = "hydra_plugins.rnngrad_sweeper.grids_sweeper.GridsSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None
    grids: Optional[Dict[str, Any]] = None


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


class GridsSweeper(BasicSweeper):
    def __init__(self, max_batch_size: Optional[int] = None, params: Optional[Dict[str, str]] = None,
                 grids: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.grids = dict(grids or {})

    def sweep(self, arguments: List[str]) -> Any:
        from rnngrad.train import config_errors_exit, open_sweep  # the project's side

        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        jobs = expand_grids(self.params, self.grids, arguments, parser)
        loader = self.hydra_context.config_loader
        job_cfgs = [loader.load_sweep_config(master_config=self.config, sweep_overrides=list(o)) for o in jobs]
        with config_errors_exit():
            sweep = open_sweep(self.config, job_cfgs)
        returns = []
        try:
            initial_job_idx = 0
            for batch in self.split_overrides_to_chunks(jobs, self.max_batch_size):
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
