"""Stopping rules: a job ends early, succeeded, when its ``stop_when`` holds.

``stop_when`` is an object with any of

- ``target``: a number (single objective) or one number per objective; the job
  stops at the first trial whose values reach it, in each objective's direction
  (<= to minimize, >= to maximize);
- ``patience`` (+ optional ``min_delta``, default 0; single objective): the job
  stops once ``patience`` of its finished trials have come after the trial
  within ``min_delta`` of its best, i.e. no trial improved by more than
  ``min_delta`` over the last ``patience`` finished trials.

``max_failed_trials`` and ``timeout`` stay options of their own. A target is
checked on each trial as it finishes, by the slot that ran it; a plateau is
counted from the job's trials in the database (two indexed queries), after each
trial in durable mode and at each write of a memory-mode batch.
"""

from __future__ import annotations

import math
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from studies.config.errors import ConfigError
from studies.jobs.base import COUNTED, MAX_TRIALS
from studies.models import Job, Trial

RULES = ("target", "patience", "min_delta")


def clean_stop_when(value: Any, directions: list[str], field: str = "stop_when") -> dict:
    """``stop_when`` as stored, or ConfigError naming the key that is wrong."""
    if value in (None, {}):
        return {}
    if not isinstance(value, dict):
        raise ConfigError(field, 'must be an object, e.g. {"target": 0.01} or {"patience": 50}')
    unknown = sorted(set(value) - set(RULES))
    if unknown:
        raise ConfigError(f"{field}.{unknown[0]}", f"is not a stopping rule ({', '.join(RULES)})")
    clean: dict[str, Any] = {}
    if "target" in value:
        clean["target"] = _target(value["target"], directions, f"{field}.target")
    if "patience" in value:
        if len(directions) != 1:
            raise ConfigError(f"{field}.patience", "needs a single-objective study")
        patience = value["patience"]
        if isinstance(patience, bool) or not isinstance(patience, int):
            raise ConfigError(f"{field}.patience", "must be an integer number of trials")
        if not 1 <= patience <= MAX_TRIALS:
            raise ConfigError(f"{field}.patience", f"must be between 1 and {MAX_TRIALS}")
        clean["patience"] = patience
        delta = value.get("min_delta", 0)
        if not _finite(delta) or delta < 0:
            raise ConfigError(f"{field}.min_delta", "must be a finite number, at least 0")
        clean["min_delta"] = float(delta)
    elif "min_delta" in value:
        raise ConfigError(f"{field}.min_delta", "needs patience")
    return clean


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _target(value: Any, directions: list[str], field: str) -> list[float]:
    targets = value if isinstance(value, list) else [value]
    if len(targets) != len(directions):
        raise ConfigError(field, f"needs one number per objective ({len(directions)})")
    if not all(_finite(t) for t in targets):
        raise ConfigError(field, "must be finite numbers")
    return [float(t) for t in targets]


def _reaches(value: float, target: float, direction: str) -> bool:
    return value >= target if direction == "maximize" else value <= target


def rule_met(job: Job, trial: FrozenTrial | None = None) -> tuple[str, str]:
    """(rule, what happened) of the first stopping rule that holds, or ("", "")."""
    if not job.stop_when:
        return "", ""
    if trial is not None and (detail := target_reached(job, trial)):
        return "target", detail
    if detail := plateau_reached(job):
        return "patience", detail
    return "", ""


def target_reached(job: Job, trial: FrozenTrial) -> str:
    """Why ``trial`` ends its job by reaching the target, or ""."""
    targets = job.stop_when.get("target")
    if not targets or trial.state != TrialState.COMPLETE or not trial.values:
        return ""
    directions = job.study.directions
    if not all(map(_reaches, trial.values, targets, directions)):
        return ""
    what = f"target {targets[0]:g}" if len(targets) == 1 else f"targets {targets}"
    return f"Stopped: {what} reached at trial #{trial.number}"


def plateau_reached(job: Job) -> str:
    """Why the job ends on a plateau (``patience``), or ""."""
    patience = job.stop_when.get("patience")
    if not patience:
        return ""
    direction = job.study.directions[0]
    trials = Trial.objects.filter(job_link__job_id=job.pk)
    best = trials.best_value(direction)
    if best is None:
        return ""
    delta = job.stop_when.get("min_delta", 0.0)
    near = {"value__gte": best - delta} if direction == "maximize" else {"value__lte": best + delta}
    first = (
        trials.complete()
        .filter(**near)
        .exclude(datetime_complete=None)
        .order_by("datetime_complete", "number")
        .values_list("number", "datetime_complete")
        .first()
    )
    if first is None:
        return ""
    since = trials.filter(state__in=COUNTED, datetime_complete__gt=first[1]).count()
    if since < patience:
        return ""
    return (
        f"Stopped: no improvement over {patience} trials "
        f"(min_delta {delta:g}) since trial #{first[0]}"
    )
