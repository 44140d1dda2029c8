"""Validation of a whole study's configuration, shared by the REST API and the pages.

``clean_study_config(data, instance=None)`` takes JSON-like input (what a client
posts, or a form's parsed fields) and returns the complete, normalized
configuration, ready to assign to a Study row:

    {"name": str, "directions": ["minimize" | "maximize", ...],
     "sampler": {"type", "options", "seed"}, "pruner": {"type", "options"},
     "search_space": {...}, "objective": "" or a registered name, "user_attrs": {...}}

With ``instance`` the data is a partial update: missing keys keep the
instance's values. Anything invalid raises ``studies.config.errors.ConfigError``
whose ``field`` names the key (e.g. "search_space.lr.low") and whose
``message`` says why; the API turns it into ``400 {field: [message]}``.
"""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Callable
from typing import Any

from django.conf import settings
from optuna.distributions import check_distribution_compatibility

from studies.config.errors import ConfigError
from studies.config.samplers import (
    DEFAULT_PRUNER,
    DEFAULT_SAMPLER,
    validate_pruner,
    validate_sampler,
)
from studies.config.search_space import SearchSpace, to_distribution, validate_search_space
from studies.models import Study, parse_distribution
from studies.objectives.registry import get_objective

FIELDS = ("name", "directions", "sampler", "pruner", "search_space", "objective", "user_attrs")
DIRECTIONS = ("minimize", "maximize")
NAME_MAX_LENGTH = Study._meta.get_field("name").max_length
OBJECTIVE_MAX_LENGTH = Study._meta.get_field("objective").max_length
MAX_EXACT_INT = 2**53
PARAM_NAME_MAX_LENGTH = 200  # as validate_search_space allows
# More objectives than this is a mistake, not a study.
MAX_DIRECTIONS = 32
INVALID = object()  # what a field's check returns when it failed


def clean_study_config(data: dict[str, Any], *, instance: Study | None = None) -> dict[str, Any]:
    """Return the complete normalized configuration or raise ConfigError naming the field.

    Every field is checked, so one ConfigError reports all their mistakes. What
    depends on another field (an objective's fit to the directions and the search
    space, a grid sampler's fit to the space) is checked once that field is valid.
    """
    if not isinstance(data, dict):
        raise ConfigError("non_field_errors", "must be an object")
    current = _current(instance)
    errors: list[ConfigError] = []

    def check(key: str, clean: Callable[[Any], Any]) -> Any:
        try:
            return clean(data[key] if key in data else current[key])
        except ConfigError as e:
            errors.append(e)
            return INVALID

    def clean_space(space: Any) -> SearchSpace:
        space = clean_search_space(space)
        if instance is not None:
            check_compatible(space, instance.param_distributions)
        return space

    def clean_sampler(sampler: Any) -> dict[str, Any]:
        # Finite: the options are served as strict JSON (the study list would be a
        # 500 for everyone), and no sampler option means anything as NaN or Infinity.
        check_json("sampler", sampler, finite=True)
        sampler = validate_sampler(sampler, None if search_space is INVALID else search_space)
        check_sampler_installed(sampler["type"])
        return sampler

    def clean_pruner(pruner: Any) -> dict[str, Any]:
        check_json("pruner", pruner, finite=True)
        return validate_pruner(pruner)

    config: dict[str, Any] = {}
    config["name"] = check("name", lambda name: clean_name(name, instance))
    config["directions"] = check("directions", lambda d: clean_directions(d, instance))
    config["search_space"] = search_space = check("search_space", clean_space)
    config["sampler"] = check("sampler", clean_sampler)
    config["pruner"] = check("pruner", clean_pruner)
    if INVALID in (config["directions"], search_space):
        config["objective"] = check("objective", clean_objective)  # the name alone
    else:
        config["objective"] = check(
            "objective", lambda o: clean_objective(o, config["directions"], search_space)
        )
    config["user_attrs"] = check("user_attrs", clean_user_attrs)
    if errors:
        raise ConfigError.combine(errors)
    return config


def _current(instance: Study | None) -> dict[str, Any]:
    if instance is None:
        return {
            "name": None,
            "directions": None,
            "sampler": DEFAULT_SAMPLER,
            "pruner": DEFAULT_PRUNER,
            "search_space": {},
            "objective": "",
            "user_attrs": {},
        }
    return {field: getattr(instance, field) for field in FIELDS}


def check_text(field: str, value: str) -> None:
    # The databases store UTF-8 text: a lone surrogate cannot be encoded, and
    # PostgreSQL refuses NUL characters.
    problem = text_problem(value)
    if problem:
        raise ConfigError(field, problem)


def is_utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def clean_name(name: Any, instance: Study | None = None) -> str:
    if name is None or (isinstance(name, str) and not name.strip()):
        raise ConfigError("name", "is required")
    if not isinstance(name, str):
        raise ConfigError("name", "must be a string")
    name = name.strip()
    if len(name) > NAME_MAX_LENGTH:
        raise ConfigError("name", f"must be at most {NAME_MAX_LENGTH} characters")
    check_text("name", name)
    others = Study.objects.filter(name=name)
    if instance is not None:
        others = others.exclude(pk=instance.pk)
    if others.exists():
        raise ConfigError("name", f"a study named {name!r} already exists")
    return name


def clean_directions(directions: Any, instance: Study | None = None) -> list[str]:
    if directions is None:
        directions = ["minimize"]
    if isinstance(directions, str):
        directions = [directions]
    if not isinstance(directions, list) or not directions:
        raise ConfigError("directions", 'must be a non-empty list of "minimize" or "maximize"')
    if len(directions) > MAX_DIRECTIONS:
        raise ConfigError("directions", f"may list at most {MAX_DIRECTIONS} objectives")
    clean = []
    for direction in directions:
        if not isinstance(direction, str) or direction.lower() not in DIRECTIONS:
            raise ConfigError("directions", f'{direction!r} is not "minimize" or "maximize"')
        clean.append(direction.lower())
    # Optuna studies never change direction: trials already told were judged by it.
    if instance is not None and clean != list(instance.directions):
        raise ConfigError("directions", "cannot change after the study is created")
    return clean


def clean_search_space(space: Any, field: str = "search_space") -> SearchSpace:
    """validate_search_space, plus the ranges Optuna's samplers can actually sample."""
    check_json(field, space, finite=True)
    clean = validate_search_space(space, field)
    errors = []
    for name, spec in clean.items():
        if spec["type"] == "int":
            # Optuna keeps every parameter as a float: larger integers lose digits.
            for key in ("low", "high"):
                if abs(spec[key]) > MAX_EXACT_INT:
                    errors.append(ConfigError(f"{field}.{name}.{key}", "must be within ±2**53"))
        elif spec["type"] == "float" and not math.isfinite(spec["high"] - spec["low"]):
            errors.append(ConfigError(f"{field}.{name}.high", "high - low must be a finite float"))
    if errors:
        raise ConfigError.combine(errors)
    return clean


# Samplers whose algorithm lives in an optional package, which Optuna imports
# only at the first sample: check up front rather than fail every ask.
SAMPLER_PACKAGES = {"cmaes": "cmaes", "gp": "torch"}


def check_sampler_installed(kind: str) -> None:
    package = SAMPLER_PACKAGES.get(kind)
    if package and importlib.util.find_spec(package) is None:
        raise ConfigError(
            "sampler.type", f"{kind} needs the {package} package, which this hub does not have"
        )


def check_compatible(search_space: SearchSpace, known: dict[str, str]) -> None:
    """Reject parameters whose type or choices differ from what the study's trials used."""
    for name, spec in search_space.items():
        if name not in known:
            continue
        try:
            check_distribution_compatibility(parse_distribution(known[name]), to_distribution(spec))
        except ValueError as e:
            raise ConfigError(
                f"search_space.{name}",
                f"is incompatible with the distribution earlier trials used ({e})",
            ) from None


def clean_objective(
    objective: Any, directions: list[str] | None = None, search_space: SearchSpace | None = None
) -> str:
    """A registered objective's name; with ``directions``, one that fits the study."""
    if objective is None or objective == "":
        return ""
    if not isinstance(objective, str):
        raise ConfigError("objective", "must be null or the name of a registered objective")
    if len(objective) > OBJECTIVE_MAX_LENGTH:
        raise ConfigError("objective", f"{objective[:50]!r}... is not a registered objective")
    check_text("objective", objective)
    # Imported here: the objective registry imports models, and this module is
    # imported by the API at start-up.

    info = get_objective(objective)
    if info is None:
        raise ConfigError("objective", f"{objective!r} is not a registered objective")
    # The objective's own checks: its number of values, the spaces it can evaluate.
    if directions is not None:
        info.validate_for(directions, search_space)
    return objective


def clean_user_attrs(user_attrs: Any, field: str = "user_attrs") -> dict[str, Any]:
    """A study's or an enqueued trial's user attributes: any JSON object within the bounds.

    Non-finite numbers are kept (Optuna's attributes may hold them; the API serves
    them as "inf", "-inf" and "nan").
    """
    if user_attrs is None:
        return {}
    if not isinstance(user_attrs, dict):
        raise ConfigError(field, "must be an object")
    check_json(field, user_attrs)
    # Measured as stored (JSONTextField's json.dumps); check_json bounded the depth.
    size = len(json.dumps(user_attrs))
    limit = settings.HUB_MAX_USER_ATTRS_BYTES
    if size > limit:
        raise ConfigError(field, f"is {size} bytes as JSON; at most {limit} are allowed")
    return user_attrs


def clean_fixed_params(params: Any, field: str = "params") -> dict[str, Any]:
    """The parameter values of an enqueued trial: names to numbers, strings, booleans or null."""
    if not isinstance(params, dict):
        raise ConfigError(field, "must be an object of parameter values by name")
    limit = settings.HUB_MAX_PARAMS
    if len(params) > limit:
        raise ConfigError(field, f"holds {len(params)} parameters; at most {limit} are allowed")
    for name, value in params.items():
        if not isinstance(name, str) or not 1 <= len(name) <= PARAM_NAME_MAX_LENGTH:
            raise ConfigError(field, f"names must be 1 to {PARAM_NAME_MAX_LENGTH} characters")
        problem = text_problem(name)
        if problem:
            raise ConfigError(field, f"names {problem}")
        where = f"{field}.{name}"
        if value is not None and not isinstance(value, bool | int | float | str):
            raise ConfigError(where, "must be a number, string, boolean or null")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(where, "must be a finite number (no distribution holds NaN or inf)")
        if isinstance(value, str):
            check_text(where, value)
    return params


def check_depth(field: str, value: Any) -> None:
    """Refuse a value nested deeper than HUB_MAX_JSON_DEPTH (``{}`` is 1 level, ``{"a": {}}`` 2).

    Iterative, as every walk over user JSON here: the recursive ones (json_safe,
    Python's pretty-printer, a pruner wrapping a pruner) fail far too deep.
    """
    limit = settings.HUB_MAX_JSON_DEPTH
    stack: list[tuple[Any, int, tuple[str, ...]]] = [(value, 1, ())]
    while stack:
        item, depth, path = stack.pop()
        if not isinstance(item, dict | list | tuple):
            continue
        if depth > limit:
            raise ConfigError(_where(field, path), f"is nested more than {limit} levels deep")
        if isinstance(item, dict):
            stack.extend((child, depth + 1, path + (str(key),)) for key, child in item.items())
        else:
            stack.extend((child, depth + 1, path) for child in item)


def check_json(field: str, value: Any, *, finite: bool = False) -> None:
    """Refuse what the hub cannot store or serve, anywhere inside a JSON value.

    Nesting beyond HUB_MAX_JSON_DEPTH, NUL characters (PostgreSQL's text cannot
    hold them), lone surrogates (UTF-8 cannot carry them), and with ``finite``
    NaN and infinities (strict JSON has none). The error names the field and up
    to two keys below it, e.g. "sampler.options.prior_weight".
    """
    check_depth(field, value)
    stack: list[tuple[Any, tuple[str, ...]]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem:
                raise ConfigError(_where(field, path), problem)
        elif isinstance(item, float):
            if finite and not math.isfinite(item):
                raise ConfigError(_where(field, path), "must be finite (not NaN or Infinity)")
        elif isinstance(item, dict):
            for key, child in item.items():
                problem = text_problem(key) if isinstance(key, str) else None
                if problem:
                    raise ConfigError(_where(field, path), f"keys {problem}")
                stack.append((child, path + (str(key),)))
        elif isinstance(item, list | tuple):
            stack.extend((child, path) for child in item)


def text_problem(value: str) -> str | None:
    """Why the databases cannot store ``value`` as UTF-8 text, or None."""
    if "\x00" in value:
        return "must not contain NUL characters"
    if not is_utf8(value):
        return "must be valid Unicode text (no lone surrogates)"
    return None


def _where(field: str, path: tuple[str, ...]) -> str:
    # Two keys are enough to find the mistake, and keep a deep path readable.
    return ".".join([field, *(field_name(key) for key in path[:2])])


def field_name(key: str) -> str:
    """A key of the user's JSON as part of an error's field: servable whatever it holds."""
    return key.encode("utf-8", "backslashreplace").decode().replace("\x00", "\\x00")[:100]
