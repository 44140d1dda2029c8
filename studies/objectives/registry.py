"""The registry: every objective by name, built in, project (settings) or command (admin)."""

from __future__ import annotations

import functools
import importlib
import inspect
import re
from collections.abc import Iterable
from types import ModuleType
from typing import Any

from django.conf import settings

from studies.config.errors import ConfigError
from studies.models import CommandObjective
from studies.objectives import builtin, sklearn_models
from studies.objectives.base import ObjectiveInfo
from studies.objectives.command import CommandObjectiveInfo, validate_command_objective

# Built-in objectives: name -> factory(dimension) for those with a dimension.

DIMENSION_SUFFIX = re.compile(r"^(?P<base>[A-Za-z0-9_.-]+):(?P<dim>\d{1,4})$")


@functools.cache
def builtin_objectives() -> dict[str, ObjectiveInfo]:
    found = {info.name: info for info in builtin.defaults()}
    found.update((info.name, info) for info in sklearn_models.objectives())
    return found


def _from_dotted_path(path: str) -> list[ObjectiveInfo]:
    module_name, _, attr = path.rpartition(".")
    try:
        target: Any = importlib.import_module(path)
    except ImportError:
        if not module_name:
            raise ConfigError("HUB_OBJECTIVES", f"cannot import {path!r}") from None
        try:
            target = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as e:
            raise ConfigError("HUB_OBJECTIVES", f"cannot import {path!r}: {e}") from None
    return _collect(target, path)


def _collect(target: Any, path: str) -> list[ObjectiveInfo]:
    if isinstance(target, ObjectiveInfo):
        return [target]
    if isinstance(target, ModuleType):
        return [v for v in vars(target).values() if isinstance(v, ObjectiveInfo)]
    if isinstance(target, list | tuple):
        return [info for item in target for info in _collect(item, path)]
    if callable(target):
        # A plain f(trial) -> value: it samples its own parameters.
        return [
            ObjectiveInfo(
                name=getattr(target, "__name__", path.rpartition(".")[2]),
                description=inspect.getdoc(target) or "",
                directions=list(getattr(target, "directions", ["minimize"])),
                search_space={},
                function=lambda trial, params, f=target: f(trial),
            )
        ]
    raise ConfigError("HUB_OBJECTIVES", f"{path!r} is not an objective, a list or a module")


@functools.lru_cache(maxsize=8)
def project_objectives(paths: tuple[str, ...]) -> dict[str, ObjectiveInfo]:
    found: dict[str, ObjectiveInfo] = {}
    for path in paths:
        for info in _from_dotted_path(path):
            found[info.name] = info
    return found


def python_objectives() -> dict[str, ObjectiveInfo]:
    found = dict(builtin_objectives())
    found.update(project_objectives(tuple(settings.HUB_OBJECTIVES)))
    return found


def _command_objectives(names: Iterable[str] | None = None) -> dict[str, ObjectiveInfo]:
    rows = CommandObjective.objects.filter(enabled=True)
    if names is not None:
        rows = rows.filter(name__in=list(names))
    return {row.name: CommandObjectiveInfo.from_row(row) for row in rows}


def get_objectives() -> dict[str, ObjectiveInfo]:
    """Every registered objective by name: built-in, project, then command objectives."""
    found = python_objectives()
    for name, info in _command_objectives().items():
        found.setdefault(name, info)
    return found


def get_objective(name: str) -> ObjectiveInfo | None:
    """The objective called ``name`` (``sphere:10`` picks a dimension), or None."""
    if not isinstance(name, str) or not name:
        return None
    python = python_objectives()
    if name in python:
        return python[name]
    match = DIMENSION_SUFFIX.match(name)
    if match:
        return builtin.with_dimension(match["base"], int(match["dim"]))
    return _command_objectives([name]).get(name)


def check_command_objective(row: CommandObjective) -> None:
    """Raise ConfigError naming the invalid field of a command objective staff register."""
    validate_command_objective(row)
    if row.name in python_objectives():
        raise ConfigError("name", f"{row.name!r} is already a built-in or project objective")
