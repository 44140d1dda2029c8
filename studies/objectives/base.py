"""What an objective is: ObjectiveInfo, the @objective decorator and the run context."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna

from studies.config.errors import ConfigError
from studies.config.search_space import SearchSpace, suggest, validate_search_space

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
