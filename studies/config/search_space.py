"""Declared search spaces: validation, Optuna distributions and define-by-run sampling.

A search space is a JSON object keyed by parameter name, in order:

    {"booster": {"type": "categorical", "choices": ["gbtree", "dart"]},
     "lr": {"type": "float", "low": 1e-4, "high": 1, "log": true},
     "rate_drop": {"type": "float", "low": 0, "high": 1, "when": {"booster": ["dart"]}}}

A parameter with ``when`` exists only in trials whose earlier parameters took
one of the listed values.
"""

from __future__ import annotations

import math
from typing import Any

import optuna
from django.conf import settings
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from studies.config.errors import ConfigError

SearchSpace = dict[str, dict[str, Any]]

KEYS = {
    "float": {"type", "low", "high", "log", "step", "when"},
    "int": {"type", "low", "high", "log", "step", "when"},
    "categorical": {"type", "choices", "when"},
}


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_int(value: Any) -> bool:
    if isinstance(value, float) and value.is_integer():
        return True
    return isinstance(value, int) and not isinstance(value, bool)


def validate_search_space(space: Any, field: str = "search_space") -> SearchSpace:
    """Return a normalized copy of ``space`` or raise ConfigError naming the parameter."""
    if space is None:
        return {}
    if not isinstance(space, dict):
        raise ConfigError(field, "must be an object keyed by parameter name")
    # Before any per-parameter work: an ask samples each parameter in a transaction
    # of its own that rewrites the trial's params, so a huge space is a slow request.
    limit = settings.HUB_MAX_PARAMS
    if len(space) > limit:
        raise ConfigError(field, f"declares {len(space)} parameters; at most {limit} are allowed")
    result: SearchSpace = {}
    errors: list[ConfigError] = []
    invalid: set[str] = set()  # a condition on one of these cannot be checked
    for name, spec in space.items():
        if not name or len(name) > 200:
            errors.append(ConfigError(field, "parameter names must be 1 to 200 characters"))
            invalid.add(name)
            continue
        try:
            result[name] = _validate_parameter(f"{field}.{name}", spec, result, invalid)
        except ConfigError as e:
            errors.append(e)
            invalid.add(name)
    if errors:
        raise ConfigError.combine(errors)
    return result


def _validate_parameter(
    where: str, spec: Any, earlier: SearchSpace, invalid: set[str]
) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise ConfigError(where, "must be an object with a type")
    kind = spec.get("type")
    if not isinstance(kind, str) or kind not in KEYS:
        raise ConfigError(f"{where}.type", "must be one of float, int, categorical")
    unknown = sorted(set(spec) - KEYS[kind])
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}", f"is not an option of a {kind} parameter")
    if kind == "categorical":
        clean = {"type": kind, "choices": _validate_choices(where, spec.get("choices"))}
    else:
        clean = _validate_numeric(where, kind, spec)
    if "when" in spec and spec["when"] is not None:
        clean["when"] = _validate_when(where, spec["when"], earlier, invalid)
    return clean


def _validate_numeric(where: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    check = is_number if kind == "float" else is_int
    word = "a finite number" if kind == "float" else "an integer"
    for key in ("low", "high"):
        if key not in spec:
            raise ConfigError(f"{where}.{key}", "is required")
        if not check(spec[key]):
            raise ConfigError(f"{where}.{key}", f"must be {word}")
    low, high = spec["low"], spec["high"]
    if kind == "int":
        low, high = int(low), int(high)
    if low > high:
        raise ConfigError(f"{where}.low", f"must not be greater than high ({low} > {high})")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}.log", "must be true or false")
    step = spec.get("step")
    if step is not None:
        if not check(step) or step <= 0:
            raise ConfigError(f"{where}.step", f"must be {word} greater than 0")
        if log and (kind == "float" or step != 1):
            raise ConfigError(f"{where}.step", "cannot be combined with log")
        if kind == "int":
            step = int(step)
    if log and low <= 0:
        raise ConfigError(f"{where}.low", "must be greater than 0 when log is true")
    clean: dict[str, Any] = {"type": kind, "low": low, "high": high}
    if log:
        clean["log"] = True
    if step is not None:
        clean["step"] = step
    return clean


def _validate_choices(where: str, choices: Any) -> list[Any]:
    if not isinstance(choices, list) or not choices:
        raise ConfigError(f"{where}.choices", "must be a non-empty list")
    _check_length(f"{where}.choices", choices)
    seen: set[tuple[Any, ...]] = set()  # by choice_key: linear, where in_choices is quadratic
    for choice in choices:
        if choice is not None and not isinstance(choice, bool | int | float | str):
            raise ConfigError(f"{where}.choices", "may hold only null, booleans, numbers, strings")
        if isinstance(choice, float) and not math.isfinite(choice):
            raise ConfigError(f"{where}.choices", "may not hold nan or infinity")
        key = choice_key(choice)
        if key in seen:
            raise ConfigError(f"{where}.choices", f"lists {choice!r} twice")
        seen.add(key)
    return list(choices)


def _check_length(field: str, values: list[Any]) -> None:
    # Every trial stores its distributions, choices included.
    if len(values) > settings.HUB_MAX_CHOICES:
        limit = settings.HUB_MAX_CHOICES
        raise ConfigError(field, f"lists {len(values)} values; at most {limit} are allowed")


def _validate_when(
    where: str, when: Any, earlier: SearchSpace, invalid: set[str]
) -> dict[str, list[Any]]:
    if not isinstance(when, dict) or not when:
        raise ConfigError(f"{where}.when", "must map earlier parameters to allowed values")
    clean = {}
    for parent, allowed in when.items():
        field = f"{where}.when.{parent}"
        if parent in invalid:
            continue  # its own error says what is wrong
        if parent not in earlier:
            raise ConfigError(field, "names no parameter declared before this one")
        if not isinstance(allowed, list) or not allowed:
            raise ConfigError(field, "must be a non-empty list of values")
        _check_length(field, allowed)
        spec = earlier[parent]
        if spec["type"] == "categorical":
            keys = {choice_key(c) for c in spec["choices"]}
            bad = [v for v in allowed if choice_key(v) not in keys]
            if bad:
                raise ConfigError(field, f"{bad[0]!r} is not one of the choices of {parent}")
        elif spec["type"] == "int":
            bad = [v for v in allowed if not is_int(v) or not spec["low"] <= v <= spec["high"]]
            if bad:
                raise ConfigError(field, f"{bad[0]!r} is not an integer in the range of {parent}")
        else:
            raise ConfigError(field, "a condition must name a categorical or int parameter")
        clean[parent] = allowed
    return clean


def _same(a: Any, b: Any) -> bool:
    # 3 and 3.0 are the same number, but True is not 1 and "1" is not 1.
    if _is_numeric(a) and _is_numeric(b):
        return a == b
    return type(a) is type(b) and a == b


def _is_numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def choice_key(value: Any) -> tuple[Any, ...]:
    """A hashable key equal for values _same calls the same (3 and 3.0, not True and 1)."""
    if value is None:
        return ("null",)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("number", value)
    if isinstance(value, str):
        return ("str", value)
    return ("other", id(value))  # a list or object is never a choice


def in_choices(value: Any, choices: list[Any]) -> bool:
    return any(_same(value, c) for c in choices)


def to_distribution(spec: dict[str, Any]) -> BaseDistribution:
    if spec["type"] == "categorical":
        return CategoricalDistribution(spec["choices"])
    cls = FloatDistribution if spec["type"] == "float" else IntDistribution
    kwargs: dict[str, Any] = {"log": spec.get("log", False)}
    if "step" in spec:
        kwargs["step"] = spec["step"]
    return cls(spec["low"], spec["high"], **kwargs)


def is_active(spec: dict[str, Any], params: dict[str, Any]) -> bool:
    """Whether a parameter exists given the values its earlier parameters took."""
    return all(
        parent in params and in_choices(params[parent], allowed)
        for parent, allowed in spec.get("when", {}).items()
    )


def suggest(trial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    """Sample every active parameter of ``space`` on ``trial``, in declaration order."""
    params: dict[str, Any] = {}
    for name, spec in space.items():
        if not is_active(spec, params):
            continue
        if spec["type"] == "categorical":
            params[name] = trial.suggest_categorical(name, spec["choices"])
        elif spec["type"] == "float":
            params[name] = trial.suggest_float(
                name, spec["low"], spec["high"], step=spec.get("step"), log=spec.get("log", False)
            )
        else:
            step, log = spec.get("step", 1), spec.get("log", False)
            params[name] = trial.suggest_int(name, spec["low"], spec["high"], step=step, log=log)
    return params
