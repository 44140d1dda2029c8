"""How the pages show values: ``{% load hub %}``, then ``{{ value|fmt_value }}`` and so on.

The views pass numbers, specs and attribute dicts as they are; every way of
turning them into text for people lives here, once.
"""

from __future__ import annotations

import json
import math
from typing import Any

from django import template

register = template.Library()


@register.filter
def fmt_value(value: Any) -> str:
    """A parameter or objective value: six significant digits, "—" for none."""
    if value is None:
        return "—"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        return f"{value:.6g}"
    return str(value)


@register.filter
def fmt_duration(seconds: float | None) -> str:
    """Seconds as "3.46 s", "2 min 5 s" or "2 h 1 min"; "—" for none."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _choice(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@register.filter
def describe_spec(spec: dict[str, Any]) -> str:
    """A search-space entry's range or choices: "0.001 … 1, log" or "adam, sgd"."""
    if spec["type"] == "categorical":
        return ", ".join(_choice(c) for c in spec["choices"])
    text = f"{fmt_value(spec['low'])} … {fmt_value(spec['high'])}"
    if spec.get("log"):
        text += ", log"
    if spec.get("step") is not None:
        text += f", step {fmt_value(spec['step'])}"
    return text


@register.filter
def describe_when(spec: dict[str, Any]) -> str:
    """A conditional entry's condition: "booster ∈ {dart}"; "" when it always exists."""
    parts = []
    for parent, allowed in (spec.get("when") or {}).items():
        values = ", ".join(_choice(v) for v in allowed)
        parts.append(f"{parent} ∈ {{{values}}}")
    return " and ".join(parts)


@register.inclusion_tag("studies/_attrs.html")
def attrs_table(attrs: dict[str, Any]) -> dict[str, Any]:
    """A trial's user or system attributes: strings as they are, anything else as JSON."""
    rows = []
    for key, value in attrs.items():
        if isinstance(value, str):
            rows.append((key, value, False))
        else:
            text = json.dumps(value, indent=2, default=str, allow_nan=True)
            rows.append((key, text, "\n" in text))
    return {"rows": rows}
