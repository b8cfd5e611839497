"""rnngrad: why gradients vanish and explode in recurrent networks, measured.

Importing the package sets, for this process and every process it starts, what the environment does not
already say:
- MLflow's telemetry off (a study sends nothing anywhere unasked): MLFLOW_DISABLE_TELEMETRY=true
  (MLFLOW_DISABLE_TELEMETRY=false turns it back on).
- bounded waits on a tracking server (MLflow's own defaults, a 120 s timeout and 7 retries with a backoff
  factor of 2, keep a stalled server's client waiting for many minutes per request): a 15 s timeout, 2 retries,
  backoff factor 1 (waits of about 0 and 2 s, plus up to 1 s of jitter each), so a request to a server
  that stalls fails in under a minute (3 x 15 s + about 4 s), one that is gone in a few seconds.
"""

import os

ENVIRONMENT_DEFAULTS = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",  # seconds without an answer before a request counts as failed
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}

for _key, _value in ENVIRONMENT_DEFAULTS.items():
    os.environ.setdefault(_key, _value)
