"""Behaviour fixed across refactors: a small sweep logs the metrics that the code of commit b82ebfe logged.

The expected values were measured on that code (an AMD EPYC with AVX-512, OpenBLAS SkylakeX kernel) with the same
sweep and seeds. 20 updates of an 8-unit model are far from chaotic, so another machine's last-bit
differences stay below the tolerance; a change to the mathematics does not.
"""

import pytest
from clihelpers import TINY, run_cli, runs

EXPECTED = {
    "T8-relu-orth-clipnorm1-k3-s1-adding": {
        "train/loss": 0.13961443054250788, "eval/loss": 0.11515360667286266, "grad/norm_peak": 3.541419681446094,
        "lyap/top": -0.18813503867810327, "grad/trunc_cosine": 0.8980673486422922},
    "T8-lstm-orth-clipnorm1-k3-s1-adding": {
        "train/loss": 0.6144493088736063, "eval/loss": 0.41594438300012004, "grad/norm_peak": 3.0435479772836866,
        "lyap/top": -1.455679497050106, "grad/trunc_cosine": 0.9273163700391125},
    "T8-gru-orth-clipnorm1-k3-s1-adding": {
        "train/loss": 0.7597818209038556, "eval/loss": 0.5548702010631605, "grad/norm_peak": 4.276994721243582,
        "lyap/top": -0.294735533533063, "grad/trunc_cosine": 0.9710373389000788},
}


@pytest.mark.slow
def test_a_small_sweep_logs_the_metrics_of_before_the_redesign(tmp_path):
    proc = run_cli(tmp_path, *TINY, "model.cell=rnn,lstm,gru", "model.activation=relu", "clip=norm",
                   "bptt.truncation=3", "seed=1", "hydra.launcher.n_jobs=2", multirun=True)
    assert proc.returncode == 0, proc.stderr
    _, found = runs(tmp_path)
    logged = {r.info.run_name: r.data.metrics for r in found if r.data.tags.get("rnngrad.sweep") != "true"}
    assert set(logged) == set(EXPECTED)
    for name, expected in EXPECTED.items():
        assert {key: logged[name][key] for key in expected} == pytest.approx(expected, rel=1e-9, abs=1e-12), name
