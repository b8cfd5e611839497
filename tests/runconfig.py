"""Run configurations for tests that call the training loop directly, without Hydra's composition."""

from omegaconf import OmegaConf

from rnngrad import config


def run_config(*overrides: str) -> config.Config:
    """The validated schema object with dotted overrides, e.g. run_config("task.seq_len=10", "seed=1").

    Values are parsed as on Hydra's command line (null, numbers, booleans); raises ConfigError or
    OmegaConf's ValidationError as composition would.
    """
    cfg = OmegaConf.merge(OmegaConf.structured(config.Config), OmegaConf.from_dotlist(list(overrides)))
    return config.checked(cfg)
