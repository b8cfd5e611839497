"""Bash completion of `rnngrad train` overrides: Hydra's, with a typed key's valid values.

Hydra's own completion (`-sc query=bash`) completes config groups and keys, but after `key=` it offers
only the key's current value (`model.activation=` -> `model.activation=tanh`) and nothing once a
value is begun (`model.activation=t`). Here a key typed by an enum in the schema (`rnngrad.config`)
completes to every valid value by its plain name, a bool to true/false, and a sweep's comma list
(`model.activation=tanh,r`) to its next item; everything else is Hydra's (`hydra.plugins.completion_plugin`).

The class is not a Hydra plugin (Hydra refuses two completion plugins for one shell): `rnngrad.cli`
calls it itself, with the line after `rnngrad train`; its bash script asks `rnngrad -sc query=bash`
(Hydra's script would ask the program without its subcommand, and only a python script's path).
"""

from __future__ import annotations


from hydra.core.global_hydra import GlobalHydra
from hydra.core.object_type import ObjectType
from hydra.errors import HydraException
from hydra.plugins.completion_plugin import CompletionPlugin
from hydra.types import RunMode
from omegaconf import BooleanNode, EnumNode, OmegaConf

from rnngrad import config as config_mod
from rnngrad.store import PROJECT_ROOT

CONFIG_NAME = "config"
MULTIRUN_FLAGS = ("-m", "--multirun")

# bash: ask `rnngrad -sc query=bash` what completes the line up to the cursor; '=' is not a word break,
# so `model.activation=t` is one word (as in Hydra's own script)
BASH_SCRIPT = """\
_rnngrad_completion()
{
    local line=${COMP_LINE:0:COMP_POINT}
    local word=${line##*[[:space:]]}
    local words=($line)
    local choices
    choices=$(COMP_LINE="$COMP_LINE" COMP_POINT="$COMP_POINT" "${words[0]}" -sc query=bash 2>/dev/null) || return
    COMPREPLY=($(compgen -o nospace -o default -W "$choices" -- "$word"))
}
COMP_WORDBREAKS=${COMP_WORDBREAKS//=}
complete -o nospace -o default -F _rnngrad_completion rnngrad"""
UNINSTALL_SCRIPT = "complete -r rnngrad 2> /dev/null; unset -f _rnngrad_completion"


class TypedValueCompletion(CompletionPlugin):
    """Hydra's completion (its `_query`), completing a typed key's values by their plain names."""

    def install(self) -> None:
        print(BASH_SCRIPT)

    def uninstall(self) -> None:
        print(UNINSTALL_SCRIPT)

    @staticmethod
    def provides() -> str:
        return "bash"

    def query(self, config_name: str | None, line: str = "") -> None:
        print(" ".join(sorted(self._query(config_name, line))))

    @staticmethod
    def help(command: str) -> str:
        return f'eval "$(rnngrad train -sc {command}=bash)"'

    def _query(self, config_name: str | None, line: str) -> list[str]:
        new_word = not line or line[-1].isspace()
        words = [w for w in line.split() if not w.startswith("-")]  # the overrides (Hydra's flags dropped)
        word = "" if new_word or not words else words[-1]
        multirun = any(w in MULTIRUN_FLAGS for w in line.split())
        values = self._values(config_name, word, words[:-1], multirun) if word else None
        return super()._query(config_name, line) if values is None else values

    def _values(self, config_name, word: str, before: list[str], multirun: bool) -> list[str] | None:
        """`key=<values>` completions, or None when `word` is not `key=...` for a typed leaf key."""
        key, eq, typed = word.partition("=")
        bare = key.lstrip("+~")
        if not eq or not bare or "/" in bare or self._is_group(bare, config_name, before):
            return None
        run_mode = RunMode.MULTIRUN if multirun else RunMode.RUN
        try:
            cfg = self.config_loader.load_configuration(config_name=config_name, overrides=before, run_mode=run_mode)
        except HydraException:
            return None
        parent_key, _, leaf = bare.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
        if not OmegaConf.is_dict(parent) or leaf not in parent:
            return None
        node = parent._get_node(leaf)
        if isinstance(node, EnumNode):
            choices = [member.name for member in node.enum_type]
        elif isinstance(node, BooleanNode):
            choices = ["true", "false"]
        else:
            return None  # Hydra's: the current value
        done, _, partial = typed.rpartition(",")  # a sweep's list: complete its last item
        head = f"{key}={done + ',' if done else ''}"
        return [head + choice for choice in choices if choice.startswith(partial)]

    def _is_group(self, key: str, config_name, before: list[str]) -> bool:
        return bool(self.config_loader.get_group_options(
            group_name=key, results_filter=ObjectType.CONFIG, config_name=config_name, overrides=before))


def query(line: str) -> None:
    """Print the completions of the last word of `line` (the overrides after `rnngrad train`), sorted."""
    from hydra import initialize_config_dir

    config_mod.register_configs()
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3", job_name="train"):
        TypedValueCompletion(GlobalHydra.instance().config_loader()).query(CONFIG_NAME, line)
