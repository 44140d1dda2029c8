"""What a command objective's program may receive: the registered space, and no more.

Staff register a command with a search space; its values are all the program
was meant to receive. A study's declared space replaces the registered one
when it samples, so for a command objective it must fit inside it:

- only registered parameter names, each with its registered type;
- categorical choices among the registered ones;
- numeric ranges inside the registered ranges, on the registered step's grid
  (a declared step a multiple of it; log is free, as it only changes how values
  inside the range are drawn);
- the registered conditions (``when``), so a study cannot leave out an argument
  in a trial staff meant to have it, nor add one where staff did not.

String values are rendered into argv, where one that begins with ``-`` reads as
an option and one with a ``..`` segment or an absolute path names a file outside
where staff pointed. Those are refused in a registered space unless staff set
the objective's ``allow_unsafe_strings``, and then studies still get only the
registered ones. Before a program starts, each trial's values are checked
against the registered space once more (``check_values``): enqueued trials and
rows written before these checks go through it too.
"""

from __future__ import annotations

import os
import re
from typing import Any

from studies.config.errors import ConfigError
from studies.config.search_space import SearchSpace, in_choices, is_int, is_number

SEGMENTS = re.compile(r"[/\\]")
# Numbers on a float grid are compared with this much relative slack.
GRID_TOLERANCE = 1e-9


def unsafe_string(value: Any) -> str | None:
    """Why a string cannot safely become (part of) an argv element, or None."""
    if not isinstance(value, str):
        return None
    if "\x00" in value:
        return "contains a NUL character"
    if value.startswith("-"):
        return "begins with '-', so a program would read it as an option"
    if os.path.isabs(value) or value.startswith("\\"):
        return "is an absolute path"
    if ".." in SEGMENTS.split(value):
        return "has a '..' path segment"
    return None


def check_registered_strings(
    space: SearchSpace, allow_unsafe: bool, field: str = "search_space"
) -> None:
    """The admin's check of a registered space: no unsafe string unless staff allow them."""
    if allow_unsafe:
        return
    errors = []
    for name, spec in space.items():
        for choice in spec.get("choices", ()):
            reason = unsafe_string(choice)
            if reason:
                errors.append(
                    ConfigError(
                        f"{field}.{name}.choices",
                        f"{choice!r} {reason}; tick 'allow unsafe strings' if the program "
                        "expects such values",
                    )
                )
                break
    if errors:
        raise ConfigError.combine(errors)


def check_fits(
    declared: SearchSpace,
    registered: SearchSpace,
    *,
    objective: str,
    allow_unsafe: bool,
    field: str = "search_space",
) -> None:
    """Raise ConfigError naming each declared parameter that leaves the registered space."""
    errors: list[ConfigError] = []
    for name, spec in declared.items():
        where = f"{field}.{name}"
        own = registered.get(name)
        try:
            if own is None:
                known = ", ".join(registered) or "none"
                raise ConfigError(where, f"is not a parameter of {objective} (it has: {known})")
            if spec["type"] != own["type"]:
                raise ConfigError(
                    f"{where}.type", f"must be {own['type']}, as {objective} registers it"
                )
            if spec["type"] == "categorical":
                _fit_choices(where, spec["choices"], own["choices"], allow_unsafe)
            else:
                _fit_numbers(where, spec, own)
            _fit_when(where, spec, own, declared)
        except ConfigError as e:
            errors.append(e)
    if errors:
        raise ConfigError.combine(errors)


def _fit_choices(where: str, choices: list[Any], own: list[Any], allow_unsafe: bool) -> None:
    for choice in choices:
        reason = unsafe_string(choice)
        if reason and not (allow_unsafe and in_choices(choice, own)):
            raise ConfigError(f"{where}.choices", f"{choice!r} {reason}")
        if not in_choices(choice, own):
            listed = ", ".join(repr(c) for c in own)
            raise ConfigError(
                f"{where}.choices", f"{choice!r} is not one of the registered choices ({listed})"
            )


def _fit_numbers(where: str, spec: dict[str, Any], own: dict[str, Any]) -> None:
    if spec["low"] < own["low"]:
        raise ConfigError(f"{where}.low", f"must be at least {own['low']}, the registered low")
    if spec["high"] > own["high"]:
        raise ConfigError(f"{where}.high", f"must be at most {own['high']}, the registered high")
    grid = own.get("step", 1 if own["type"] == "int" else None)
    if grid is None:
        return  # any value inside the range is one staff allowed
    step = spec.get("step", 1 if spec["type"] == "int" else None)
    if step is None or not _multiple(step, grid):
        raise ConfigError(f"{where}.step", f"must be a multiple of {grid}, the registered step")
    if not _multiple(spec["low"] - own["low"], grid):
        grid_text = f"{own['low']} plus a multiple of {grid}"
        raise ConfigError(f"{where}.low", f"must be on the registered grid: {grid_text}")


def _multiple(value: float, step: float) -> bool:
    if is_int(value) and is_int(step):
        return int(value) % int(step) == 0
    quotient = value / step
    return abs(quotient - round(quotient)) <= GRID_TOLERANCE * max(1.0, abs(quotient))


def _fit_when(where: str, spec: dict[str, Any], own: dict[str, Any], declared: SearchSpace) -> None:
    when, registered = spec.get("when", {}), own.get("when", {})
    if set(when) != set(registered):
        expected = ", ".join(registered) or "none"
        raise ConfigError(f"{where}.when", f"must keep the registered conditions (on: {expected})")
    for parent, allowed in when.items():
        parent_spec = declared.get(parent)
        if parent_spec is None:
            raise ConfigError(f"{where}.when.{parent}", "names no declared parameter")
        # Compare only the values the declared parent can take.
        expected = [v for v in registered[parent] if _takes(parent_spec, v)]
        got = [v for v in allowed if _takes(parent_spec, v)]
        same = all(in_choices(v, expected) for v in got) and all(
            in_choices(v, got) for v in expected
        )
        if not same:
            raise ConfigError(
                f"{where}.when.{parent}",
                f"must be {expected!r}: the registered condition, for the values {parent} can take",
            )


def _takes(spec: dict[str, Any], value: Any) -> bool:
    if spec["type"] == "categorical":
        return in_choices(value, spec["choices"])
    if spec["type"] == "int":
        step = spec.get("step", 1)
        return (
            is_int(value)
            and spec["low"] <= value <= spec["high"]
            and (int(value) - spec["low"]) % step == 0
        )
    return False


def check_values(params: dict[str, Any], registered: SearchSpace, allow_unsafe: bool) -> None:
    """Raise ValueError unless every value of a trial is one the registered space holds."""
    for name, value in params.items():
        spec = registered.get(name)
        if spec is None:
            raise ValueError(f"parameter {name!r} is not registered for this command")
        if spec["type"] == "categorical":
            reason = unsafe_string(value)
            if reason and not allow_unsafe:
                raise ValueError(f"parameter {name}={value!r} {reason}")
            if not in_choices(value, spec["choices"]):
                raise ValueError(f"parameter {name}={value!r} is not a registered choice")
            continue
        number = is_number(value) if spec["type"] == "float" else is_int(value)
        slack = GRID_TOLERANCE * max(1.0, abs(spec["low"]), abs(spec["high"]))
        if not number or not spec["low"] - slack <= value <= spec["high"] + slack:
            raise ValueError(
                f"parameter {name}={value!r} is outside the registered range "
                f"[{spec['low']}, {spec['high']}]"
            )
