"""The `rnngrad` command: its --help, its subcommands, and bash completion of `rnngrad train` overrides."""

import subprocess
import sys

import pytest
from clihelpers import TINY, environment, rnngrad_command, runs, store_uri

from rnngrad import cli, config
from rnngrad.store import PROJECT_ROOT

PYTHON_CLI = [sys.executable, "-m", "rnngrad.cli"]


def rnngrad(*args, command=PYTHON_CLI, env=None, cwd=None, timeout=120):
    return subprocess.run([*command, *args], capture_output=True, text=True, env=environment(env), cwd=cwd,
                          timeout=timeout)


def query(line: str, point: int | None = None) -> list[str]:
    """What `rnngrad -sc query=bash` answers bash for COMP_LINE=line, the cursor at `point` (default: the end)."""
    proc = rnngrad("-sc", "query=bash",
                   env={"COMP_LINE": line, "COMP_POINT": str(len(line) if point is None else point)})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_help_opens_with_the_project_its_keys_and_every_experiment_preset():
    top = rnngrad("--help")
    assert top.returncode == 0, top.stderr
    assert top.stdout.startswith("rnngrad: why gradients vanish and explode in recurrent neural networks")
    for key in ("task.seq_len=", "model.activation=", "model.init=", "model.spectral_radius=", "clip=norm",
                "optim.lr=", "bptt.truncation=", "seed="):
        assert f"\n  {key}" in top.stdout, key
    presets = top.stdout.split("Experiment presets")[1].split("\n\n")[0]
    listed = {line.split()[0] for line in presets.splitlines()[1:]}
    assert listed == {p.stem for p in (PROJECT_ROOT / "conf" / "experiment").glob("*.yaml")}
    assert 'eval "$(rnngrad train -sc install=bash)"' in top.stdout  # Hydra's $$ escape undone
    # the choices the help lists are the schema's
    for key, enum in (("model.activation", config.Activation), ("model.init", config.Init)):
        line = next(line for line in top.stdout.splitlines() if line.strip().startswith(f"{key}="))
        assert line.split(maxsplit=1)[1].split(", ") == [m.name for m in enum], key

    train = rnngrad("train", "--help")
    assert train.returncode == 0, train.stderr
    assert train.stdout.startswith(top.stdout)  # the same opening, then Hydra's groups and every key
    presets = sorted(p.stem for p in (PROJECT_ROOT / "conf" / "experiment").glob("*.yaml"))
    assert len(presets) == 15 and "experiment: " + ", ".join(presets) + "\n" in train.stdout  # Hydra's group list
    assert "  spectral_radius: null" in train.stdout and "rnngrad train --hydra-help" in train.stdout


def test_no_command_or_an_unknown_one_exits_2_naming_the_commands():
    for args in ([], ["trian"]):
        proc = rnngrad(*args)
        assert proc.returncode == 2 and proc.stdout == ""
        assert "rnngrad {train,report,ui}" in proc.stderr
    assert "unknown command 'trian'; choose one of train, report, ui" in rnngrad("trian").stderr


def test_completion_of_keys_and_of_enum_values_by_their_plain_names():
    assert query("rnngrad train model.act") == ["model.activation="]
    assert query("rnngrad train model.activation=t") == ["model.activation=tanh"]
    assert query("rnngrad train model.activation=") == [f"model.activation={m.name}" for m in
                                                         sorted(config.Activation, key=lambda m: m.name)]
    assert query("rnngrad train -m model.activation=tanh,r") == ["model.activation=tanh,relu"]
    assert query("rnngrad train model.init=i") == ["model.init=identity"]
    assert query("rnngrad train train.verbose=") == ["train.verbose=false", "train.verbose=true"]
    assert query("rnngrad train model=l") == ["model=lstm"]  # groups: Hydra's own completion
    assert query("rnngrad train experiment=p") == ["experiment=precision"]
    assert query("rnngrad train seed=") == ["seed=0"]  # an untyped key: its current value, as Hydra does
    # the cursor, not the end of the line, decides the word (bash edits mid-line)
    assert query("rnngrad train model.act seed=1", point=len("rnngrad train model.act")) == ["model.activation="]
    # the command's name and the other commands' options
    assert query("rnngrad tr") == ["train"]
    assert query("rnngrad ") == ["train", "report", "ui", "--help"]
    assert query("rnngrad ui --") == ["--experiment", "--help", "--port", "--uri"]
    assert query("rnngrad report --t") == ["--tracking-uri"]
    assert query("rnngrad report c") == ["classic"] and query("rnngrad report classic s") == []
    # Hydra's form of the query (`rnngrad train -sc query=bash`) answers the same
    train_form = rnngrad("train", "-sc", "query=bash", env={"COMP_LINE": "rnngrad train model.act", "COMP_POINT": "23"})
    assert train_form.stdout.split() == ["model.activation="]


def test_the_completion_script_completes_in_bash_through_the_installed_entry_point(tmp_path):
    """`eval "$(rnngrad train -sc install=bash)"`, then TAB as bash would press it (COMP_LINE, COMP_POINT)."""
    command = rnngrad_command()
    bin_dir = str(tmp_path / "bin")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "rnngrad").symlink_to(command[0])
    script = r'''
        eval "$(rnngrad train -sc install=bash)"
        for line in "rnngrad train model.act" "rnngrad train model.activation=t" "rnngrad tr"; do
            COMP_LINE=$line; COMP_POINT=${#line}; COMPREPLY=()
            _rnngrad_completion
            echo "$line -> ${COMPREPLY[*]}"
        done
        complete -p rnngrad
    '''
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120,
                          env=environment({"PATH": f"{bin_dir}:{environment()['PATH']}"}))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "rnngrad train model.act -> model.activation=",
        "rnngrad train model.activation=t -> model.activation=tanh",
        "rnngrad tr -> train",
        "complete -o default -o nospace -F _rnngrad_completion rnngrad",
    ]


@pytest.mark.slow
def test_rnngrad_train_is_the_hydra_app_through_the_installed_entry_point(tmp_path):
    proc = rnngrad("train", *TINY, "seed=4", f"tracking.uri={store_uri(tmp_path)}", f"hydra.run.dir={tmp_path / 'out'}",
                   command=rnngrad_command(), cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    _, found = runs(tmp_path)
    assert [(r.info.run_name, r.info.status) for r in found] == [("T8-tanh-orth-s4-adding", "FINISHED")]
    assert (tmp_path / "out" / ".hydra" / "config.yaml").is_file()  # Hydra's job directory, as with -m rnngrad.train


def test_rnngrad_report_is_the_report_cli(tmp_path):
    missing = tmp_path / "none" / "mlflow.db"
    proc = rnngrad("report", "--tracking-uri", f"sqlite:///{missing}", "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert f"no MLflow store at {missing}" in proc.stderr
    assert not (tmp_path / "none").exists() and not (tmp_path / "out").exists()
    usage = rnngrad("report", "--help")
    assert usage.returncode == 0 and usage.stdout.startswith("usage: rnngrad report [-h] [--tracking-uri")


def test_runs_url_opens_the_classic_runs_table_sorted_by_name():
    assert cli.runs_url(5000, "7") == ("http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
                                       "&orderByKey=tags.%60mlflow.runName%60&orderByAsc=true")
    assert cli.runs_url(5001, None) == "http://127.0.0.1:5001/#/experiments"
