"""The store helpers shared by the app and the report."""

import pytest

from rnngrad import store


def test_describe_names_the_projects_store_relative_to_its_root_and_redacts_servers():
    assert store.describe(f"sqlite:///{store.PROJECT_ROOT / 'mlflow.db'}") == "mlflow.db"
    assert store.describe(f"sqlite:///{store.PROJECT_ROOT / 'runs' / 'a.db'}") == "runs/a.db"
    assert store.describe("sqlite:////elsewhere/a.db") == "sqlite:////elsewhere/a.db"
    assert store.describe("http://alice:s3cret@host:5000") == "http://***@host:5000"


@pytest.mark.parametrize("value, text", [(None, "null"), (True, "true"), (False, "false"), (3, "3"), (0.5, "0.5"),
                                         ("tanh", "tanh")])
def test_the_parameter_codec_round_trips(value, text):
    assert store.encode_param(value) == text
    assert store.decode_param(text) == value and type(store.decode_param(text)) is type(value)
