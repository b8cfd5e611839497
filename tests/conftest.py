import shutil

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from rnngrad import core
from rnngrad.nn import model


@pytest.fixture
def small_rnn():
    """A small float64 RNN and input: T=7, B=3, D=3, H=5, O=2."""
    rng = np.random.default_rng(0)
    params = core.init_params(3, 5, 2, init="gaussian", scale=1.2, rng=rng)
    params["b"] = rng.normal(0, 0.3, 5)
    params["c"] = rng.normal(0, 0.3, 2)
    x = rng.normal(size=(7, 3, 3))
    return params, x


@pytest.fixture(scope="session", autouse=True)
def compiled_kernels():
    """Compile (or load) the numba kernels once, before any test starts a subprocess that would compile them
    on its own: on a fresh clone that takes about half a minute, longer than some tests wait for a run."""
    model.warm_up()


@pytest.fixture(scope="session")
def blank_db(tmp_path_factory):
    """An empty, migrated MLflow SQLite database: creating one takes seconds, copying it does not."""
    path = tmp_path_factory.mktemp("blank") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(tmp_path, blank_db):
    """A fresh store at tmp_path/store (a copy of the blank database); returns its URI."""
    (tmp_path / "store").mkdir()
    shutil.copy(blank_db, tmp_path / "store" / "mlflow.db")
    return f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
