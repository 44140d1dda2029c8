"""Samplers and pruners from JSON configuration.

``{"type": "tpe", "options": {"n_startup_trials": 5}, "seed": 42}`` becomes
``TPESampler(n_startup_trials=5, seed=42)``. ``options`` are the class's own
keyword arguments; only those a JSON value can express are accepted, and each
is checked against the class's annotation before the class is built.

Sizes are bounded before anything is built, so no configuration makes the server
slow or exhausts its memory (issue #9): every numeric option has an allowed range
(``OPTION_BOUNDS``; a sampler's cost grows with ``n_ei_candidates``,
``population_size``, ``popsize``...), and a grid is counted, without being
materialised, against ``HUB_MAX_GRID_POINTS`` (GridSampler lists every point up
front; BruteForceSampler lists every value of each parameter at each ask).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any

import optuna
from django.conf import settings
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

# Options whose annotation admits JSON but whose values are Python objects
# (CmaEsSampler's source_trials are FrozenTrials): a list of numbers would pass
# the type check and fail at the first ask.
NOT_FROM_JSON = {"source_trials"}


@dataclass(frozen=True)
class Bound:
    """The allowed range of a numeric option (inclusive; ``low_open``: greater than low)."""

    low: float
    high: float
    low_open: bool = False

    def check(self, field: str, value: float) -> None:
        # NaN fails every comparison, so it is out of range too.
        above = value > self.low if self.low_open else value >= self.low
        if not (above and value <= self.high):
            low = (
                f"greater than {_num(self.low)}" if self.low_open else f"at least {_num(self.low)}"
            )
            raise ConfigError(field, f"must be {low} and at most {_num(self.high)}")


def _num(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


MAX_TRIALS = 1_000_000  # a job's n_trials (studies.jobs.base.MAX_TRIALS)
MAX_STEP = 2**63 - 1  # reported steps are 64-bit integers
MAX_FLOAT = 1e300
# Each ask of TPE scores n_ei_candidates points per parameter against every
# trial (Optuna's default is 24); a generation of NSGA-II/III sorts population_size
# trials pairwise (default 50); CMA-ES keeps popsize candidates per generation
# (default 4 + 3 ln(dimensions)) and multiplies it by inc_popsize at each restart.
MAX_EI_CANDIDATES = 1_000
MAX_POPULATION = 1_000
# NSGA-III's reference points, C(objectives + dividing_parameter - 1, dividing_parameter),
# are all built and compared with every trial of a generation.
MAX_REFERENCE_POINTS = 10_000
PROBABILITY = Bound(0, 1)
STARTUP = Bound(0, MAX_TRIALS)
STEPS = Bound(0, MAX_STEP)
INTERVAL = Bound(1, MAX_STEP)
_NSGA = {
    "population_size": Bound(2, MAX_POPULATION),
    "mutation_prob": PROBABILITY,
    "crossover_prob": PROBABILITY,
    "swapping_prob": PROBABILITY,
}
_MEDIAN = {
    "n_startup_trials": STARTUP,
    "n_warmup_steps": STEPS,
    "interval_steps": INTERVAL,
    "n_min_trials": Bound(1, MAX_TRIALS),
}
# Every numeric option of every sampler and pruner, by type: a value outside is a
# ConfigError naming ``sampler.options.<name>`` (tests check the table is complete).
OPTION_BOUNDS: dict[str, dict[str, Bound]] = {
    "tpe": {
        "n_startup_trials": STARTUP,
        "n_ei_candidates": Bound(1, MAX_EI_CANDIDATES),
        "prior_weight": Bound(0, 1e6, low_open=True),
    },
    "cmaes": {
        "n_startup_trials": STARTUP,
        "popsize": Bound(1, MAX_POPULATION),
        "inc_popsize": Bound(1, 10),
        "sigma0": Bound(0, MAX_FLOAT, low_open=True),
    },
    "gp": {"n_startup_trials": STARTUP},
    "nsga2": _NSGA,
    "nsga3": {**_NSGA, "dividing_parameter": Bound(1, 100)},
    "median": _MEDIAN,
    "percentile": {**_MEDIAN, "percentile": Bound(0, 100)},
    "successive_halving": {
        "min_resource": Bound(1, MAX_STEP),
        "reduction_factor": Bound(2, 100),
        "min_early_stopping_rate": Bound(0, 100),
        "bootstrap_count": Bound(0, MAX_TRIALS),
    },
    "hyperband": {
        "min_resource": Bound(1, MAX_STEP),
        "max_resource": Bound(1, MAX_STEP),
        "reduction_factor": Bound(2, 100),
        "bootstrap_count": Bound(0, MAX_TRIALS),
    },
    "threshold": {
        "lower": Bound(-MAX_FLOAT, MAX_FLOAT),
        "upper": Bound(-MAX_FLOAT, MAX_FLOAT),
        "n_warmup_steps": STEPS,
        "interval_steps": INTERVAL,
    },
    "patient": {"patience": Bound(0, MAX_TRIALS), "min_delta": Bound(0, MAX_FLOAT)},
    "wilcoxon": {"p_threshold": PROBABILITY, "n_startup_steps": STEPS},
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
        if name in NOT_FROM_JSON:
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


def _check_options(
    field: str, kind: str, cls: type, options: Any, special: set[str]
) -> dict[str, Any]:
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ConfigError(field, "must be an object of keyword arguments")
    allowed = json_options(cls)
    bounds = OPTION_BOUNDS.get(kind, {})
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
        if name in bounds and isinstance(value, int | float) and not is_bool:
            bounds[name].check(f"{field}.{name}", value)
    return dict(options)


# Grids


def max_grid_points() -> int:
    return settings.HUB_MAX_GRID_POINTS


def _too_many(what: str, count: int | None) -> str:
    limit = max_grid_points()
    size = f"{count:,}" if count is not None else f"more than {limit:,}"
    return f"{what} has {size} points; at most {limit:,} are allowed (HUB_MAX_GRID_POINTS)"


def grid_points(sizes: list[int]) -> int | None:
    """The number of points of a grid with these axis sizes, or None beyond the limit.

    Multiplied one axis at a time and stopped past the limit: 5**20 points are
    counted in 20 steps, never listed.
    """
    limit, points = max_grid_points(), 1
    for size in sizes:
        points *= size
        if points > limit:
            return None
    return points


def _check_explicit_grid(field: str, grid: dict[str, Any]) -> None:
    """``options.search_space`` of a grid sampler: name -> list of values, within the limit."""
    for name, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{field}.{name}", "must be a non-empty list of values")
    if grid_points([len(values) for values in grid.values()]) is None:
        raise ConfigError(field, _too_many("the grid", None))


def _axis_size(spec: dict[str, Any], int_log: bool) -> float | None:
    """How many values a declared parameter takes (a float: may be inf); None: continuous.

    GridSampler lists the values of an int only without log; BruteForceSampler
    lists every integer of the range either way.
    """
    if spec["type"] == "categorical":
        return len(spec["choices"])
    if spec["type"] == "int" and (int_log or not spec.get("log")):
        return (spec["high"] - spec["low"]) // spec.get("step", 1) + 1
    if spec["type"] == "float" and "step" in spec:
        # Float division, not a list: (high - low) / step may be 1e300, or inf.
        steps = (spec["high"] - spec["low"]) / spec["step"]
        return math.floor(steps + 0.5) + 1 if steps <= max_grid_points() else steps + 1
    return None


def _axis_sizes(search_space: SearchSpace, sampler: str) -> dict[str, int]:
    """Each countable parameter's number of values, each within HUB_MAX_GRID_POINTS."""
    sizes: dict[str, int] = {}
    for name, spec in search_space.items():
        size = _axis_size(spec, int_log=sampler == "bruteforce")
        if size is None:
            if sampler == "grid":
                raise ConfigError(
                    "sampler.options.search_space",
                    f"is required: {name} is a continuous parameter, which has no grid",
                )
            continue  # BruteForceSampler itself refuses a float without a step
        if size > max_grid_points():
            # inf and 1e300 are floats: say "more than" rather than print them.
            count = size if isinstance(size, int) else None
            what = f"{name} (with the {sampler} sampler)"
            field = "sampler.options.search_space" if sampler == "grid" else f"search_space.{name}"
            raise ConfigError(field, _too_many(what, count))
        sizes[name] = int(size)
    return sizes


def _grid_from_space(search_space: SearchSpace) -> dict[str, list[Any]]:
    sizes = _axis_sizes(search_space, "grid")
    if grid_points(list(sizes.values())) is None:
        raise ConfigError(
            "sampler.options.search_space",
            _too_many("the grid of the declared search space", None),
        )
    grid: dict[str, list[Any]] = {}
    for name, spec in search_space.items():
        if spec["type"] == "categorical":
            grid[name] = spec["choices"]
        elif spec["type"] == "int":
            grid[name] = list(range(spec["low"], spec["high"] + 1, spec.get("step", 1)))
        else:
            grid[name] = [spec["low"] + i * spec["step"] for i in range(sizes[name])]
    return grid


def _check_reference_points(options: dict[str, Any], n_objectives: int | None) -> None:
    if n_objectives is None:
        return
    dividing = options.get("dividing_parameter", 3)
    points = math.comb(n_objectives + dividing - 1, dividing)
    if points > MAX_REFERENCE_POINTS:
        raise ConfigError(
            "sampler.options.dividing_parameter",
            f"gives {points:,} reference points for {n_objectives} objectives; "
            f"at most {MAX_REFERENCE_POINTS:,} are allowed",
        )


def build_sampler(
    config: dict[str, Any] | None,
    search_space: SearchSpace | None = None,
    n_objectives: int | None = None,
) -> Any:
    """Build the sampler for ``config``; raise ConfigError naming the bad field.

    ``n_objectives`` (the study's number of directions), when known, also bounds
    NSGA-III's reference points.
    """
    config = DEFAULT_SAMPLER if config is None else config
    if not isinstance(config, dict):
        raise ConfigError("sampler", "must be an object with a type")
    _check_keys("sampler", config, {"type", "options", "seed"})
    kind = config.get("type", "tpe")
    if not isinstance(kind, str) or kind not in SAMPLERS:
        raise ConfigError("sampler.type", f"must be one of {', '.join(SAMPLERS)}")
    cls = SAMPLERS[kind]
    options = _check_options("sampler.options", kind, cls, config.get("options"), set())
    seed = config.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ConfigError("sampler.seed", "must be a non-negative integer or null")
    if seed is not None and seed >= 2**32:
        raise ConfigError("sampler.seed", "must be less than 2**32")
    if kind == "grid" and "search_space" in options:
        _check_explicit_grid("sampler.options.search_space", options["search_space"])
    elif kind == "grid":
        options["search_space"] = _grid_from_space(search_space or {})
    elif kind == "bruteforce":
        _axis_sizes(search_space or {}, "bruteforce")
    elif kind == "nsga3":
        _check_reference_points(options, n_objectives)
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
    options = _check_options(f"{field}.options", kind, cls, config.get("options"), special)
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


def validate_sampler(
    config: Any, search_space: SearchSpace | None = None, n_objectives: int | None = None
) -> dict[str, Any]:
    """Normalize a sampler configuration, proving it builds."""
    config = DEFAULT_SAMPLER if config is None else config
    build_sampler(config, search_space, n_objectives)
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
