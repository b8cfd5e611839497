# rnngrad: everyday commands. Every target sets up .venv itself on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test study report ui bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP)  ## the whole test suite
	$(PY) -m pytest

study: $(STAMP)  ## the default study into the embedded store, then the report
	$(PY) -m rnngrad.train -m experiment=study train.verbose=false
	$(PY) scripts/build_report.py

report: $(STAMP)  ## rebuild reports/ from the store
	$(PY) scripts/build_report.py

ui: $(STAMP)  ## the MLflow UI over the embedded store, on 127.0.0.1 only
	MLFLOW_DISABLE_TELEMETRY=$${MLFLOW_DISABLE_TELEMETRY:-true} $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

bench: $(STAMP)  ## the performance benchmark (writes reports/bench.md; ~30 min: the study jobs against the baseline code, then the study with 1 worker and with 2; torch and JAX from $$RNNGRAD_TORCH_PYTHON, $$RNNGRAD_JAX_PYTHON)
	$(PY) scripts/bench.py

clean:
	rm -rf $(VENV) multirun outputs .pytest_cache
