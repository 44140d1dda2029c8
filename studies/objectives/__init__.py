"""The registry of objectives the hub's workers run: code that lives on the server.

Nothing received over the network is executed. An objective is one of:

- built in: benchmark functions (studies/objectives/builtin.py) and
  scikit-learn models on datasets shipped with scikit-learn (sklearn_models.py);
- a project's own, named by dotted path in ``settings.HUB_OBJECTIVES``: a
  module (every ObjectiveInfo in it), an ObjectiveInfo made with
  ``@objective(...)``, or a plain ``f(trial) -> value`` function;
- a CommandObjective row registered by staff in the admin (command.py).

An objective samples the study's declared search space when it has one and its
own default space otherwise, so ``sphere`` over a declared 10-parameter space is
the 10-dimensional sphere. Benchmark functions also take a dimension after a
colon: ``sphere:10``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import optuna
from django.conf import settings

from studies.search_space import ConfigError, SearchSpace, suggest, validate_search_space

ObjectiveFunction = Callable[[optuna.Trial, dict[str, Any]], float | Sequence[float]]


@dataclass
class RunContext:
    """What a running trial may ask of the job running it."""

    job_id: int | None = None
    # True once the job is cancelled or stopping: long trials should give up.
    should_stop: Callable[[], bool] = lambda: False


@dataclass
class ObjectiveInfo:
    name: str
    description: str
    directions: list[str]
    search_space: SearchSpace
    function: ObjectiveFunction | None = None
    kind: str = "project"
    # Raise ConfigError when the objective cannot evaluate a declared search space.
    check_space: Callable[[SearchSpace], None] | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "kind": self.kind,
            "directions": list(self.directions),
            "search_space": self.search_space,
            "options": self.options,
        }

    def space_for(self, declared: SearchSpace | None) -> SearchSpace:
        """The space a study's trials sample: its declared one, else ours."""
        return declared or self.search_space

    def validate_for(self, directions: list[str], declared: SearchSpace | None) -> None:
        """Raise ConfigError if this objective cannot run a study with these settings."""
        if len(directions) != len(self.directions):
            raise ConfigError(
                "objective",
                f"{self.name} returns {len(self.directions)} value(s) but the study has "
                f"{len(directions)} direction(s)",
            )
        space = self.space_for(declared)
        if not space and self.kind != "project":
            raise ConfigError("search_space", f"{self.name} needs a search space")
        if declared and self.check_space is not None:
            self.check_space(declared)

    def run(
        self, trial: optuna.Trial, params: dict[str, Any], context: RunContext
    ) -> float | Sequence[float]:
        assert self.function is not None
        return self.function(trial, params)

    def make_objective(
        self, declared: SearchSpace | None, context: RunContext | None = None
    ) -> Callable[[optuna.Trial], float | Sequence[float]]:
        """The function to pass to ``study.optimize``."""
        space = self.space_for(declared)
        context = context or RunContext()

        def objective(trial: optuna.Trial) -> float | Sequence[float]:
            return self.run(trial, suggest(trial, space), context)

        return objective


def objective(
    name: str | None = None,
    *,
    directions: Sequence[str] = ("minimize",),
    search_space: SearchSpace | None = None,
    description: str = "",
) -> Callable[[ObjectiveFunction], ObjectiveInfo]:
    """Register a project function ``f(trial, params) -> value`` as an objective.

    ``params`` holds the values sampled from the study's search space (or
    ``search_space`` here); the function may also call ``trial.suggest_*`` and
    ``trial.report`` itself.
    """

    def decorate(function: ObjectiveFunction) -> ObjectiveInfo:
        return ObjectiveInfo(
            name=name or function.__name__,
            description=description or inspect.getdoc(function) or "",
            directions=list(directions),
            search_space=validate_search_space(search_space or {}),
            function=function,
        )

    return decorate


# Built-in objectives: name -> factory(dimension) for those with a dimension.

DIMENSION_SUFFIX = re.compile(r"^(?P<base>[A-Za-z0-9_.-]+):(?P<dim>\d{1,4})$")
MAX_DIMENSION = 100


@functools.cache
def builtin_objectives() -> dict[str, ObjectiveInfo]:
    from studies.objectives import builtin, sklearn_models

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


def _python_objectives() -> dict[str, ObjectiveInfo]:
    found = dict(builtin_objectives())
    found.update(project_objectives(tuple(settings.HUB_OBJECTIVES)))
    return found


def _command_objectives(names: Iterable[str] | None = None) -> dict[str, ObjectiveInfo]:
    from studies.models import CommandObjective
    from studies.objectives.command import CommandObjectiveInfo

    rows = CommandObjective.objects.filter(enabled=True)
    if names is not None:
        rows = rows.filter(name__in=list(names))
    return {row.name: CommandObjectiveInfo.from_row(row) for row in rows}


def get_objectives() -> dict[str, ObjectiveInfo]:
    """Every registered objective by name: built-in, project, then command objectives."""
    found = _python_objectives()
    for name, info in _command_objectives().items():
        found.setdefault(name, info)
    return found


def get_objective(name: str) -> ObjectiveInfo | None:
    """The objective called ``name`` (``sphere:10`` picks a dimension), or None."""
    if not isinstance(name, str) or not name:
        return None
    python = _python_objectives()
    if name in python:
        return python[name]
    match = DIMENSION_SUFFIX.match(name)
    if match:
        from studies.objectives import builtin

        return builtin.with_dimension(match["base"], int(match["dim"]))
    return _command_objectives([name]).get(name)
