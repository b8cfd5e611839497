"""The application layer: the Hydra entry point, a sweep's life cycle and the MLflow logging.

`main` (entry point, one run) -> `tracking` (MLflow) -> `heatmap` (the per-run figure);
`sweep` (store, experiment, parent run, job checks) -> `main`, `tracking`; `console` (what a run and a
sweep print: run-name prefixes, progress, the end table). The `grids` sweeper
(hydra_plugins/rnngrad_sweeper) calls `sweep`, `console` and `main.errors_exit` only. Nothing below the app
(training, the model, the report) imports it.

Importing it makes the process's exit skip the garbage collector's walks over every object still alive
(gc.freeze, the last thing before the interpreter's finalization): with MLflow, Hydra and matplotlib
loaded they took about 2 s per process, paid by a sweep's parent and by each of its workers at its end.
"""

import atexit
import gc

atexit.register(gc.freeze)
