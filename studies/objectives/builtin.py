"""Benchmark functions with known optima, for trying samplers and the hub itself.

Each evaluates the numeric parameters of a trial in search-space order, so a
declared space of any size (or the ``name:N`` suffix) sets the dimension.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import optuna

from studies.config.errors import ConfigError
from studies.config.search_space import SearchSpace
from studies.objectives.base import ObjectiveInfo

MAX_DIMENSION = 100


def _values(params: dict[str, Any]) -> list[float]:
    return [float(v) for v in params.values() if isinstance(v, int | float)]


def sphere(x: Sequence[float]) -> float:
    return sum(v * v for v in x)


def rosenbrock(x: Sequence[float]) -> float:
    return sum(100 * (b - a * a) ** 2 + (1 - a) ** 2 for a, b in zip(x, x[1:], strict=False))


def ackley(x: Sequence[float]) -> float:
    n = len(x)
    if n == 0:
        return 0.0
    square = math.sqrt(sum(v * v for v in x) / n)
    cosine = sum(math.cos(2 * math.pi * v) for v in x) / n
    return -20 * math.exp(-0.2 * square) - math.exp(cosine) + 20 + math.e


def branin(x: Sequence[float]) -> float:
    a, b, c = 1.0, 5.1 / (4 * math.pi**2), 5 / math.pi
    r, s, t = 6.0, 10.0, 1 / (8 * math.pi)
    x1, x2 = x
    return a * (x2 - b * x1**2 + c * x1 - r) ** 2 + s * (1 - t) * math.cos(x1) + s


def binh_korn(x: Sequence[float]) -> tuple[float, float]:
    x1, x2 = x
    return 4 * x1**2 + 4 * x2**2, (x1 - 5) ** 2 + (x2 - 5) ** 2


def zdt1(x: Sequence[float]) -> tuple[float, float]:
    f1 = x[0]
    g = 1 + 9 * sum(x[1:]) / (len(x) - 1)
    return f1, g * (1 - math.sqrt(f1 / g))


def _box(dimension: int, low: float, high: float) -> SearchSpace:
    return {f"x{i}": {"type": "float", "low": low, "high": high} for i in range(dimension)}


def _numeric_space_check(name: str, exact: int | None = None, minimum: int = 1) -> Any:
    def check(space: SearchSpace) -> None:
        for param, spec in space.items():
            if spec["type"] == "categorical":
                raise ConfigError(
                    f"search_space.{param}",
                    f"{name} takes numeric parameters only, not a categorical one",
                )
        n = len(space)
        if exact is not None and n != exact:
            raise ConfigError("search_space", f"{name} takes exactly {exact} parameters, not {n}")
        if n < minimum:
            raise ConfigError("search_space", f"{name} takes at least {minimum} parameters")

    return check


def _unit_box_check(name: str) -> Any:
    numeric = _numeric_space_check(name, minimum=2)

    def check(space: SearchSpace) -> None:
        numeric(space)
        for param, spec in space.items():
            if spec["low"] < 0 or spec["high"] > 1:
                raise ConfigError(f"search_space.{param}", f"{name} is defined on [0, 1] only")

    return check


class _Spec:
    def __init__(
        self,
        function: Callable[[Sequence[float]], Any],
        description: str,
        directions: list[str],
        space: Callable[[int], SearchSpace],
        default_dimension: int,
        min_dimension: int,
        fixed: bool = False,
    ) -> None:
        self.function = function
        self.description = description
        self.directions = directions
        self.space = space
        self.default_dimension = default_dimension
        self.min_dimension = min_dimension
        self.fixed = fixed


SPECS: dict[str, _Spec] = {
    "sphere": _Spec(
        sphere,
        "Sum of squares on [-5.12, 5.12]^d. Minimum 0 at the origin.",
        ["minimize"],
        lambda d: _box(d, -5.12, 5.12),
        2,
        1,
    ),
    "rosenbrock": _Spec(
        rosenbrock,
        "Rosenbrock's banana valley on [-2.048, 2.048]^d. Minimum 0 at (1, ..., 1).",
        ["minimize"],
        lambda d: _box(d, -2.048, 2.048),
        2,
        2,
    ),
    "ackley": _Spec(
        ackley,
        "Ackley's many-local-minima function on [-32.768, 32.768]^d. Minimum 0 at the origin.",
        ["minimize"],
        lambda d: _box(d, -32.768, 32.768),
        2,
        1,
    ),
    "branin": _Spec(
        branin,
        "Branin-Hoo on x0 in [-5, 10], x1 in [0, 15]. Minimum 0.397887 at three points.",
        ["minimize"],
        lambda d: {
            "x0": {"type": "float", "low": -5.0, "high": 10.0},
            "x1": {"type": "float", "low": 0.0, "high": 15.0},
        },
        2,
        2,
        fixed=True,
    ),
    "binh_korn": _Spec(
        binh_korn,
        "Binh and Korn's two objectives (unconstrained) on x0 in [0, 5], x1 in [0, 3]; "
        "both minimized.",
        ["minimize", "minimize"],
        lambda d: {
            "x0": {"type": "float", "low": 0.0, "high": 5.0},
            "x1": {"type": "float", "low": 0.0, "high": 3.0},
        },
        2,
        2,
        fixed=True,
    ),
    "zdt1": _Spec(
        zdt1,
        "ZDT1 on [0, 1]^d: two minimized objectives with a convex Pareto front "
        "f2 = 1 - sqrt(f1) where x1..x(d-1) = 0.",
        ["minimize", "minimize"],
        lambda d: _box(d, 0.0, 1.0),
        5,
        2,
    ),
}


def _make(name: str, spec: _Spec, dimension: int) -> ObjectiveInfo:
    function = spec.function

    def evaluate(trial: optuna.Trial, params: dict[str, Any]) -> Any:
        return function(_values(params))

    if name == "zdt1":
        check = _unit_box_check(name)
    else:
        check = _numeric_space_check(
            name, spec.default_dimension if spec.fixed else None, spec.min_dimension
        )
    options: dict[str, Any] = {}
    if not spec.fixed:
        options["dimension"] = {
            "default": spec.default_dimension,
            "min": spec.min_dimension,
            "max": MAX_DIMENSION,
            "usage": f"{name}:10 for 10 dimensions, or declare the study's search space",
        }
    return ObjectiveInfo(
        name=name if dimension == spec.default_dimension else f"{name}:{dimension}",
        description=spec.description,
        directions=list(spec.directions),
        search_space=spec.space(dimension),
        function=evaluate,
        kind="builtin",
        check_space=check,
        options=options,
    )


def defaults() -> list[ObjectiveInfo]:
    return [_make(name, spec, spec.default_dimension) for name, spec in SPECS.items()]


def with_dimension(name: str, dimension: int) -> ObjectiveInfo | None:
    spec = SPECS.get(name)
    if spec is None or spec.fixed:
        return None
    if not spec.min_dimension <= dimension <= MAX_DIMENSION:
        return None
    return _make(name, spec, dimension)
