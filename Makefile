# rnngrad: everyday commands. Every target sets up .venv itself on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RNNGRAD := $(VENV)/bin/rnngrad
STAMP := $(VENV)/.installed

.PHONY: test study classic report ui bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP)  ## the whole test suite
	$(PY) -m pytest

study: $(STAMP)  ## the default study into the embedded store, then the report
	$(RNNGRAD) train -m experiment=study train.verbose=false
	$(RNNGRAD) report

classic: $(STAMP)  ## the classic tier: the papers' reproductions into the same store (about 55 min on 2 cores), then reports/classic/
	$(RNNGRAD) train -m experiment=classic train.verbose=false
	$(RNNGRAD) report classic

report: $(STAMP)  ## rebuild reports/ from the store
	$(RNNGRAD) report

ui: $(STAMP)  ## the MLflow UI on 127.0.0.1 over URI=... (default: $$MLFLOW_TRACKING_URI, else ./mlflow.db); PORT=5000
	$(RNNGRAD) ui $(if $(URI),--uri '$(URI)') $(if $(PORT),--port $(PORT))

bench: $(STAMP)  ## the performance benchmark (writes reports/bench.md; ~30 min: the study jobs against the baseline code, then the study with 1 worker and with 2; torch and JAX from $$RNNGRAD_TORCH_PYTHON, $$RNNGRAD_JAX_PYTHON)
	$(PY) scripts/bench.py

clean:
	rm -rf $(VENV) multirun outputs .pytest_cache
