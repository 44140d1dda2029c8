"""How the rows store JSON and distributions, and how numbers leave the hub as JSON."""

from __future__ import annotations

import functools
import json
import math
from typing import Any

from django.db import models
from optuna.distributions import BaseDistribution, json_to_distribution


class JSONTextField(models.TextField):
    """JSON in a text column: key order, floats, inf and nan round-trip exactly."""

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> Any:
        return None if value is None else json.loads(value)

    def to_python(self, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value

    def get_prep_value(self, value: Any) -> str | None:
        return None if value is None else json.dumps(value)

    def value_to_string(self, obj: models.Model) -> str:
        return json.dumps(self.value_from_object(obj))

    def deconstruct(self) -> Any:
        # Migrations name it by its public path, as Django names its own fields.
        name, _, args, kwargs = super().deconstruct()
        return name, "studies.models.JSONTextField", args, kwargs


@functools.lru_cache(maxsize=4096)
def parse_distribution(dist_json: str) -> BaseDistribution:
    # Trials of one study share a handful of distributions: parse each once.
    return json_to_distribution(dist_json)


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats as "inf", "-inf" and "nan": strict JSON has none.

    Iterative: a stored value nested hundreds of levels deep (accepted before
    HUB_MAX_JSON_DEPTH, or written by an objective) must still be served, and
    recursion would fail on it; tuples become lists, key order is kept.
    """
    if not isinstance(value, dict | list | tuple):
        return _safe_scalar(value)
    root: Any = {} if isinstance(value, dict) else []
    stack: list[tuple[Any, Any]] = [(value, root)]
    while stack:
        source, target = stack.pop()
        # A container is placed now and filled when popped: key order stays as it was.
        if isinstance(source, dict):
            for key, item in source.items():
                target[key] = _placed(item, stack)
        else:
            target.extend([_placed(item, stack) for item in source])
    return root


def _placed(item: Any, stack: list[tuple[Any, Any]]) -> Any:
    if isinstance(item, dict):
        child: Any = {}
    elif isinstance(item, list | tuple):
        child = []
    elif isinstance(item, float) and not math.isfinite(item):
        return _safe_scalar(item)
    else:
        return item
    stack.append((item, child))
    return child


def _safe_scalar(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def first_value(values: list[float] | None) -> float | None:
    """The sortable first objective value (SQLite stores nan as NULL anyway)."""
    if not values or values[0] is None or math.isnan(values[0]):
        return None
    return float(values[0])
