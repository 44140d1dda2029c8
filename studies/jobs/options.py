"""A job's options, validated at once: the REST API and the run form both call this."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings

from studies.config.errors import ConfigError
from studies.config.samplers import build_pruner, build_sampler
from studies.jobs.base import MAX_DELAY, MAX_TRIALS, objective_of
from studies.jobs.stopping import clean_stop_when
from studies.models import Job, Study

MODES = (Job.DURABLE, Job.MEMORY)
FIELDS = (
    "n_trials",
    "timeout",
    "concurrency",
    "delay",
    "max_failed_trials",
    "mode",
    "stop_when",
)
MAX_TIMEOUT = 365 * 86_400


def clean_job_options(study: Study, data: Any) -> dict[str, Any]:
    """The job's options with defaults filled in, or ConfigError naming every invalid field.

    Numbers are JSON numbers (the run form parses its text first). The study
    must be able to run: an objective that fits its directions and search
    space, and a sampler and pruner that build.
    """
    if not isinstance(data, Mapping):
        raise ConfigError("non_field_errors", "the body must be a JSON object")
    errors: list[ConfigError] = [
        ConfigError(key, f"is not an option of a job ({', '.join(FIELDS)})")
        for key in sorted(set(data) - set(FIELDS))
    ]
    options: dict[str, Any] = {}

    def check(key: str, clean: Callable[[Any], Any], default: Any = None) -> None:
        value = data.get(key)
        try:
            options[key] = default if value is None else clean(value)
        except ConfigError as e:
            errors.append(e)

    if data.get("n_trials") in (None, ""):
        errors.append(ConfigError("n_trials", "is required"))
    else:
        check("n_trials", lambda v: _integer("n_trials", v, 1, MAX_TRIALS))
    check("timeout", lambda v: _seconds("timeout", v, positive=True, high=MAX_TIMEOUT))
    limit = settings.HUB_MAX_JOB_CONCURRENCY
    check("concurrency", lambda v: _integer("concurrency", v, 1, limit), default=1)
    check("delay", lambda v: _seconds("delay", v, positive=False, high=MAX_DELAY), default=0.0)
    check("max_failed_trials", lambda v: _integer("max_failed_trials", v, 1))
    check("mode", _mode, default=Job.DURABLE)
    check("stop_when", lambda v: clean_stop_when(v, study.directions), default={})
    try:
        check_study_can_run(study)
    except ConfigError as e:
        errors.append(e)
    if errors:
        raise ConfigError.combine(errors)
    return options


def check_study_can_run(study: Study) -> None:
    info = objective_of(study)
    info.validate_for(study.directions, study.search_space)
    # The sampler sees the space the trials sample (a grid needs it), and the
    # number of objectives (NSGA-III's reference points grow with it).
    build_sampler(study.sampler, info.space_for(study.search_space), len(study.directions))
    build_pruner(study.pruner)


def _mode(value: Any) -> str:
    if value not in MODES:
        raise ConfigError("mode", "must be durable or memory")
    return value


def _integer(field: str, value: Any, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ConfigError(field, "must be an integer")
    if value < low:
        raise ConfigError(field, f"must be at least {low}")
    if high is not None and value > high:
        raise ConfigError(field, f"must be at most {high}")
    return value


def _seconds(field: str, value: Any, *, positive: bool, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ConfigError(field, "must be a number of seconds")
    if positive and value <= 0:
        raise ConfigError(field, "must be greater than 0")
    if value < 0:
        raise ConfigError(field, "must not be negative")
    if value > high:
        raise ConfigError(field, f"must be at most {high:g}")
    return float(value)
