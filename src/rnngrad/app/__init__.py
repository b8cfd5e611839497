"""The application layer: the Hydra entry point, a sweep's life cycle and the MLflow logging.

`main` (entry point, one run) -> `tracking` (MLflow) -> `heatmap` (the per-run figure);
`sweep` (store, experiment, parent run, job checks) -> `main`, `tracking`. The `grids` sweeper
(hydra_plugins/rnngrad_sweeper) calls `sweep` and `main.errors_exit` only. Nothing below the app
(training, the model, the report) imports it.
"""
