"""rnngrad: why gradients vanish and explode in recurrent networks, measured.

Importing the package turns MLflow's telemetry off for this process and every process it starts
(a study sends nothing anywhere unasked): MLFLOW_DISABLE_TELEMETRY=true unless the environment
already says otherwise (MLFLOW_DISABLE_TELEMETRY=false turns it back on).
"""

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
