import os
import shutil

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from rnngrad import core
from rnngrad.nn import model


LOST_GROUP = pytest.StashKey[str]()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Flag the tests that `--dist loadgroup` would not keep on one worker with the rest of their xdist_group.

    pytest-xdist groups by appending "@group" to each test's id in the worker; where that does not take
    (pytest 9 keeps the id elsewhere, so xdist 3.8 cannot), every worker would bring up its own cluster stack
    at once: two apt-get runs, two MariaDBs, clashing ports. Such tests fail at setup instead, saying why.
    """
    if not getattr(config.option, "loadgroup", False):  # set in xdist's workers only, under --dist loadgroup
        return
    for item in items:
        if item.get_closest_marker("xdist_group") and "@" not in item.nodeid:
            item.stash[LOST_GROUP] = (f"--dist loadgroup did not keep this test's xdist_group on one worker: "
                                      f"pytest-xdist cannot rename tests in pytest {pytest.__version__} "
                                      f"(pyproject pins pytest < 9)")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    # before any fixture: the group's shared fixture (the cluster stack) must not start once per worker
    if LOST_GROUP in item.stash:
        pytest.fail(item.stash[LOST_GROUP], pytrace=False)


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
    on its own: on a fresh clone that takes about half a minute, longer than some tests wait for a run.
    The workers of `-n auto` start together: every other one goes through the kernels from the other end."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    model.warm_up(reverse=int(worker.removeprefix("gw") or 0) % 2 == 1)


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
