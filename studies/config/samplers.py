"""Samplers and pruners from JSON configuration.

``{"type": "tpe", "options": {"n_startup_trials": 5}, "seed": 42}`` becomes
``TPESampler(n_startup_trials=5, seed=42)``. ``options`` are the class's own
keyword arguments; only those a JSON value can express are accepted, and each
is checked against the class's annotation before the class is built.
"""

from __future__ import annotations

import inspect
from typing import Any

import optuna
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler

from studies.config.errors import ConfigError
from studies.config.search_space import SearchSpace

SAMPLERS: dict[str, type[BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "grid": optuna.samplers.GridSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "gp": optuna.samplers.GPSampler,
    "nsga2": optuna.samplers.NSGAIISampler,
    "nsga3": optuna.samplers.NSGAIIISampler,
    "qmc": optuna.samplers.QMCSampler,
    "bruteforce": optuna.samplers.BruteForceSampler,
}

PRUNERS: dict[str, type[BasePruner]] = {
    "nop": optuna.pruners.NopPruner,
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "threshold": optuna.pruners.ThresholdPruner,
    "patient": optuna.pruners.PatientPruner,
    "wilcoxon": optuna.pruners.WilcoxonPruner,
}

DEFAULT_SAMPLER = {"type": "tpe", "options": {}, "seed": None}
DEFAULT_PRUNER = {"type": "median", "options": {}}

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "None": (type(None),),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "str": (str,),
    "dict": (dict,),
    "Mapping": (dict,),
    "list": (list,),
    "Sequence": (list,),
}


def _split_union(annotation: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in annotation:
        depth += char in "[("
        depth -= char in "])"
        if char == "|" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip().strip("()").strip() for p in parts]


def _accepted_types(annotation: Any) -> tuple[type, ...] | None:
    """The JSON types an annotation admits, or None when JSON cannot express it."""
    if not isinstance(annotation, str):
        annotation = getattr(annotation, "__name__", str(annotation))
    accepted: tuple[type, ...] = ()
    for part in _split_union(annotation):
        base = part.split("[", 1)[0].strip()
        if base not in _JSON_TYPES:
            return None
        accepted += _JSON_TYPES[base]
    return accepted


def json_options(cls: type) -> dict[str, tuple[type, ...]]:
    """The keyword arguments of ``cls`` that a JSON value can set, with their types."""
    options = {}
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name in ("self", "seed") or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        accepted = _accepted_types(param.annotation)
        if accepted is not None:
            options[name] = accepted
    return options


def _type_name(accepted: tuple[type, ...]) -> str:
    names = {int: "integer", float: "number", bool: "boolean", str: "string", dict: "object"}
    names |= {list: "list", type(None): "null"}
    if float in accepted:
        accepted = tuple(t for t in accepted if t is not int)
    return " or ".join(dict.fromkeys(names[t] for t in accepted))


def _check_options(field: str, cls: type, options: Any, special: set[str]) -> dict[str, Any]:
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ConfigError(field, "must be an object of keyword arguments")
    allowed = json_options(cls)
    for name, value in options.items():
        if name in special:
            continue
        if name not in allowed:
            known = ", ".join(sorted(allowed | dict.fromkeys(special))) or "none"
            raise ConfigError(f"{field}.{name}", f"is not an option of {cls.__name__} ({known})")
        accepted = allowed[name]
        is_bool = isinstance(value, bool)
        if not isinstance(value, accepted) or (is_bool and bool not in accepted):
            raise ConfigError(f"{field}.{name}", f"must be {_type_name(accepted)}")
    return dict(options)


def _grid_from_space(search_space: SearchSpace) -> dict[str, list[Any]]:
    grid: dict[str, list[Any]] = {}
    for name, spec in search_space.items():
        if spec["type"] == "categorical":
            grid[name] = spec["choices"]
        elif spec["type"] == "int" and not spec.get("log"):
            values = list(range(spec["low"], spec["high"] + 1, spec.get("step", 1)))
            if len(values) > 10_000:
                raise ConfigError("sampler.options.search_space", f"{name} has too many values")
            grid[name] = values
        elif spec["type"] == "float" and "step" in spec:
            n = int(round((spec["high"] - spec["low"]) / spec["step"])) + 1
            if n > 10_000:
                raise ConfigError("sampler.options.search_space", f"{name} has too many values")
            grid[name] = [spec["low"] + i * spec["step"] for i in range(n)]
        else:
            raise ConfigError(
                "sampler.options.search_space",
                f"is required: {name} is a continuous parameter, which has no grid",
            )
    return grid


def build_sampler(config: dict[str, Any] | None, search_space: SearchSpace | None = None) -> Any:
    """Build the sampler for ``config``; raise ConfigError naming the bad field."""
    config = DEFAULT_SAMPLER if config is None else config
    if not isinstance(config, dict):
        raise ConfigError("sampler", "must be an object with a type")
    _check_keys("sampler", config, {"type", "options", "seed"})
    kind = config.get("type", "tpe")
    if not isinstance(kind, str) or kind not in SAMPLERS:
        raise ConfigError("sampler.type", f"must be one of {', '.join(SAMPLERS)}")
    cls = SAMPLERS[kind]
    options = _check_options("sampler.options", cls, config.get("options"), set())
    seed = config.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ConfigError("sampler.seed", "must be a non-negative integer or null")
    if seed is not None and seed >= 2**32:
        raise ConfigError("sampler.seed", "must be less than 2**32")
    if kind == "grid" and "search_space" not in options:
        options["search_space"] = _grid_from_space(search_space or {})
    if "seed" in inspect.signature(cls.__init__).parameters:
        options["seed"] = seed
    return _construct("sampler.options", cls, options)


def build_pruner(config: dict[str, Any] | None, field: str = "pruner") -> Any:
    """Build the pruner for ``config``; raise ConfigError naming the bad field."""
    config = DEFAULT_PRUNER if config is None else config
    if not isinstance(config, dict):
        raise ConfigError(field, "must be an object with a type")
    _check_keys(field, config, {"type", "options"})
    kind = config.get("type", "median")
    if not isinstance(kind, str) or kind not in PRUNERS:
        raise ConfigError(f"{field}.type", f"must be one of {', '.join(PRUNERS)}")
    cls = PRUNERS[kind]
    special = {"wrapped_pruner"} if kind == "patient" else set()
    options = _check_options(f"{field}.options", cls, config.get("options"), special)
    if kind == "patient":
        wrapped = options.get("wrapped_pruner")
        options["wrapped_pruner"] = (
            None if wrapped is None else build_pruner(wrapped, f"{field}.options.wrapped_pruner")
        )
    return _construct(f"{field}.options", cls, options)


def _check_keys(field: str, config: dict[str, Any], known: set[str]) -> None:
    unknown = sorted(set(config) - known)
    if unknown:
        raise ConfigError(f"{field}.{unknown[0]}", f"is not a key (use {', '.join(sorted(known))})")


def _construct(field: str, cls: type, options: dict[str, Any]) -> Any:
    try:
        return cls(**options)
    except (TypeError, ValueError, OverflowError) as e:
        raise ConfigError(field, str(e).splitlines()[0] if str(e) else type(e).__name__) from None


def validate_sampler(config: Any, search_space: SearchSpace | None = None) -> dict[str, Any]:
    """Normalize a sampler configuration, proving it builds."""
    config = DEFAULT_SAMPLER if config is None else config
    build_sampler(config, search_space)
    return {
        "type": config.get("type", "tpe"),
        "options": config.get("options") or {},
        "seed": config.get("seed"),
    }


def validate_pruner(config: Any) -> dict[str, Any]:
    """Normalize a pruner configuration, proving it builds."""
    config = DEFAULT_PRUNER if config is None else config
    build_pruner(config)
    return {"type": config.get("type", "median"), "options": config.get("options") or {}}
