"""rnngrad's conf/ read as Hydra reads a directory, each YAML file parsed once per process.

Hydra composes a sweep's every job twice (the sweeper's check, then the launcher in its worker), and each
composition reads and parses the same two or three dozen YAML files again: about 40% of a composition's
~0.18 s. The `ParsedOnceConfigSource` keeps each file's parsed config (for as long as its modification
time and size stay) and hands out copies, which Hydra may change; the `ParsedOnceSearchPath` plugin puts
it in place of the plain directory source for rnngrad's conf/ only, whatever the entry point
(`@hydra.main`, `initialize_config_dir`): other Hydra apps' search paths are left as they are.
Only Hydra's public plugin API is used (`ConfigSource`, `SearchPathPlugin`).
"""

import copy
import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import DictConfig, ListConfig, OmegaConf

SCHEME = "rnngrad-conf"
HEADER_BYTES = 512  # where Hydra looks for a file's `# @package` header, as its own file source does

# full path -> ((mtime_ns, size), header, config): one process's parsed files
_parsed: Dict[str, Tuple[Tuple[int, int], Dict[str, str], "DictConfig | ListConfig"]] = {}


def _conf_dir() -> Path:
    """rnngrad's conf/ (beside src/ in the checkout, as rnngrad.store.PROJECT_ROOT finds it)."""
    return Path(__file__).resolve().parents[3] / "conf"


class ParsedOnceConfigSource(ConfigSource):
    """A directory of YAML configs, as Hydra's file:// source reads it, each file parsed once."""

    def __init__(self, provider: str, path: str) -> None:
        if "://" not in path:
            path = f"{self.scheme()}://{path}"
        super().__init__(provider=provider, path=path)

    @staticmethod
    def scheme() -> str:
        return SCHEME

    def _full_path(self, config_path: str) -> str:
        return os.path.realpath(os.path.join(self.path, config_path))

    def load_config(self, config_path: str) -> ConfigResult:
        full_path = self._full_path(self._normalize_file_name(config_path))
        try:
            stat = os.stat(full_path)
        except FileNotFoundError:
            raise ConfigLoadError(f"Config not found : {full_path}") from None
        version = (stat.st_mtime_ns, stat.st_size)
        if full_path not in _parsed or _parsed[full_path][0] != version:
            with open(full_path, encoding="utf-8") as f:
                header = ConfigSource._get_header_dict(f.read(HEADER_BYTES))
                f.seek(0)
                _parsed[full_path] = (version, header, OmegaConf.load(f))
        _, header, config = _parsed[full_path]
        # copies: Hydra edits what it loads (it takes out the defaults list, for one)
        return ConfigResult(config=copy.deepcopy(config), path=f"{self.scheme()}://{self.path}",
                            provider=self.provider, header=dict(header))

    def available(self) -> bool:
        return self.is_group("")

    def is_group(self, config_path: str) -> bool:
        return os.path.isdir(self._full_path(config_path))

    def is_config(self, config_path: str) -> bool:
        return os.path.isfile(self._full_path(self._normalize_file_name(config_path)))

    def list(self, config_path: str, results_filter: Optional[ObjectType]) -> List[str]:
        files: List[str] = []
        for name in os.listdir(self._full_path(config_path)):
            self._list_add_result(files=files, file_path=os.path.join(config_path, name), file_name=name,
                                  results_filter=results_filter)
        return sorted(set(files))


class ParsedOnceSearchPath(SearchPathPlugin):
    """Reads rnngrad's conf/ through `ParsedOnceConfigSource` wherever a search path names it."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        conf = _conf_dir()
        for element in search_path.get_path():
            scheme, _, path = element.path.rpartition("://")
            if scheme in ("", "file") and Path(path).is_absolute() and Path(path).resolve() == conf:
                element.path = f"{SCHEME}://{conf}"
