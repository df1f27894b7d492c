"""Plugins: criteria and passes from other installed packages, by entry point.

A package declares, in its ``pyproject.toml``::

    [project.entry-points."onnxpruner.criteria"]
    max-abs = "my_package.criteria:MaxAbs"        # a passes.criteria.Criterion subclass
    [project.entry-points."onnxpruner.passes"]
    my-pass = "my_package.passes:MyPass"           # a passes.base.Pass dataclass

and the name is usable wherever a built-in one is: ``--criterion max-abs``,
``score{criterion=max-abs}``, ``--passes ...,my-pass``. Entry points are read the first time a
name is not a built-in one (``load``), so a plain run never imports a plugin; the entry point's
name must be the class's ``name``. A plugin that cannot be loaded is one clear error naming it.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Callable

from .base import SpecError

GROUPS = {"criteria": "onnxpruner.criteria", "passes": "onnxpruner.passes"}
_loaded: set[str] = set()


class PluginError(SpecError):
    """A plugin that cannot be loaded or registered; the message is one line (a usage error)."""


def load(kind: str, register: Callable[[type], type]) -> list[str]:
    """Register every ``kind`` (criteria or passes) entry point once; returns the names added."""
    group = GROUPS[kind]
    if group in _loaded:
        return []
    _loaded.add(group)
    added = []
    for ep in entry_points(group=group):
        where = f"plugin {ep.name!r} ({ep.value}, entry point group {group})"
        try:
            obj = ep.load()
        except Exception as exc:
            text = str(exc).strip().splitlines()
            raise PluginError(f"{where} cannot be imported: {type(exc).__name__}: {text[0] if text else ''}") from None
        if getattr(obj, "name", None) != ep.name:
            raise PluginError(f"{where}: the entry point's name must be the class's name "
                              f"(it is {getattr(obj, 'name', None)!r})")
        try:
            register(obj)
        except TypeError as exc:
            raise PluginError(f"{where}: {exc}") from None
        added.append(ep.name)
    return added
