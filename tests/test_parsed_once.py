"""rnngrad's conf/ through the parsed-once config source: the same configs as Hydra's own directory source."""

import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra_plugins.rnngrad_sweeper import parsed_once
from omegaconf import OmegaConf

from rnngrad import config

CONF = Path(__file__).resolve().parents[1] / "conf"
OVERRIDES = [["experiment=study"], ["experiment=classic", "seed=3"], ["model=lstm", "task=copy", "clip=norm"],
             ["hydra/launcher=slurm", "experiment=seqlen"]]


def composed(conf: Path, overrides: list[str]) -> tuple[list[dict], str]:
    config.register_configs()
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
        sources = OmegaConf.to_container(cfg.hydra.runtime.config_sources)
        cfg.hydra.runtime.config_sources = []  # they name the source and its folder: compared on their own
        return sources, OmegaConf.to_yaml(cfg, resolve=False).replace(str(conf), "CONF")


@pytest.mark.parametrize("overrides", OVERRIDES, ids=" ".join)
def test_the_conf_folder_composes_as_a_copy_of_it_read_by_hydras_own_source(tmp_path, overrides):
    copied = tmp_path / "conf"
    shutil.copytree(CONF, copied)
    ours, ours_text = composed(CONF, overrides)
    again_sources, again_text = composed(CONF, overrides)  # the second from the parsed files
    theirs, theirs_text = composed(copied, overrides)
    assert ours_text == again_text == theirs_text
    assert {"path": str(CONF), "schema": parsed_once.SCHEME, "provider": "main"} in ours
    assert {"path": str(copied), "schema": "file", "provider": "main"} in theirs  # another folder: left alone


def test_a_file_is_parsed_again_when_it_changes_and_every_load_gets_its_own_copy(tmp_path):
    (tmp_path / "group").mkdir()
    path = tmp_path / "group" / "a.yaml"
    path.write_text("# @package _global_\nx: 1\n")
    source = parsed_once.ParsedOnceConfigSource("test", str(tmp_path))
    first = source.load_config("group/a")
    assert first.config == {"x": 1} and first.header["package"] == "_global_"
    first.config.x = 5  # Hydra edits what it loads
    assert source.load_config("group/a").config == {"x": 1}
    path.write_text("# @package _global_\nx: 22\n")  # another size: parsed again
    assert source.load_config("group/a").config == {"x": 22}
    assert source.is_group("group") and source.is_config("group/a") and not source.is_config("group/b")
    assert source.list("group", None) == ["a"]  # as Hydra's own source lists a group
