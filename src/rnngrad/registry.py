"""Named choices with keyword options: the one lookup behind `make_task` and `make_optimizer`.

A registry maps a name to a class; the class's keyword parameters (after its positional ones) are the
options a configuration may set. `option_names` lists them, `lookup` checks a name and its options
and returns the class, each error naming the valid choices.
"""

from __future__ import annotations

import inspect


def option_names(cls, *positional: str) -> tuple[str, ...]:
    """The keyword options of cls: its constructor's parameters other than `positional`."""
    return tuple(p for p in inspect.signature(cls).parameters if p not in positional)


def lookup(kind: str, registry: dict, name: str, options: dict, *positional: str):
    """The class registered as `name`, after checking that it takes every key of `options`.

    kind names the registry in messages ('task', 'optimizer'). Raises ValueError naming the valid
    names or options.
    """
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r}; valid names: {', '.join(registry)}")
    valid = option_names(registry[name], *positional)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for {kind} {name!r}; valid options: {', '.join(valid) or 'none'}")
    return registry[name]
