"""Charts of a study over trials: optimization history, value distribution (EDF), timeline."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import plotly.graph_objects as go
from django.utils import timezone
from optuna.trial import TrialState

from studies.charts import limits
from studies.charts.base import (
    BEST_COLOR,
    STATE_COLORS,
    Chart,
    TrialData,
    check_objective,
    figure,
    fmt,
    running_best,
    sample,
    value_label,
)


def history_chart(data: TrialData, objective: int = 0) -> Chart:
    objective = check_objective(data, objective)
    rows, values = data.objective(objective)
    if not len(rows):
        return Chart(empty="No completed trials yet.")
    numbers = data.numbers[rows]
    best, improved = running_best(values, data.minimize(objective))
    shown = sample(numbers, limits.MAX_POINTS, keep=improved)
    note = ""
    if len(shown) < len(rows):
        note = (
            f"Showing {fmt(len(shown))} of {fmt(len(rows))} completed trials (a fixed sample "
            "that keeps every improvement); the best-value line uses all of them."
        )
    # The best line only needs its corners: each improvement, then the last trial.
    corners = np.r_[improved, len(rows) - 1]
    points = go.Scatter(
        x=numbers[shown],
        y=values[shown],
        mode="markers",
        name="Trial",
        marker={"size": 6, "color": STATE_COLORS["COMPLETE"], "opacity": 0.75},
        customdata=data.ids[rows][shown],
        hovertemplate="Trial %{x}<br>Value %{y:.6g}<extra></extra>",
    )
    line = go.Scatter(
        x=numbers[corners],
        y=best[corners],
        mode="lines",
        name="Best value",
        line={"color": BEST_COLOR, "width": 2, "shape": "hv"},
        hoverinfo="skip",
    )
    fig = figure(
        points,
        line,
        xaxis_title="Trial",
        yaxis_title=value_label(data, objective),
    )
    return Chart(fig, note, clickable=True)


def edf_chart(data: TrialData, objective: int = 0) -> Chart:
    objective = check_objective(data, objective)
    _, values = data.objective(objective)
    if not len(values):
        return Chart(empty="No completed trials yet.")
    ordered = np.sort(values)
    note = ""
    if len(ordered) > limits.EDF_POINTS:
        fractions = np.linspace(0, 1, limits.EDF_POINTS)
        xs = np.quantile(ordered, fractions)
        note = (
            f"Distribution of {fmt(len(ordered))} values, drawn at {limits.EDF_POINTS} quantiles."
        )
    else:
        xs = ordered
        fractions = np.arange(1, len(ordered) + 1) / len(ordered)
    line = go.Scatter(
        x=xs,
        y=fractions,
        mode="lines",
        line={"shape": "hv", "color": STATE_COLORS["COMPLETE"], "width": 2},
        hovertemplate="Value ≤ %{x:.6g}: %{y:.1%} of trials<extra></extra>",
    )
    fig = figure(
        line,
        xaxis_title=value_label(data, objective),
        yaxis={"title": {"text": "Cumulative fraction of trials"}, "range": [0, 1.02]},
    )
    return Chart(fig, note)


def timeline_chart(data: TrialData) -> Chart:
    started = np.flatnonzero(np.isfinite(data.start))
    if not len(started):
        return Chart(empty="No trial has started yet.")
    note = ""
    if len(started) > limits.MAX_TIMELINE_BARS:
        note = f"The latest {fmt(limits.MAX_TIMELINE_BARS)} of {fmt(len(started))} trials."
        started = started[-limits.MAX_TIMELINE_BARS :]
    now = timezone.now().timestamp()
    zone = timezone.get_current_timezone()
    traces = []
    for state in TrialState:
        rows = started[data.states[started] == state.value]
        if not len(rows):
            continue
        start = data.start[rows]
        end = np.where(np.isfinite(data.complete[rows]), data.complete[rows], now)
        traces.append(
            go.Bar(
                base=[_iso(s, zone) for s in start],
                x=np.maximum(end - start, 0) * 1000,  # bar length in ms on a date axis
                y=data.numbers[rows],
                orientation="h",
                name=state.name.capitalize(),
                marker={"color": STATE_COLORS[state.name], "line": {"width": 0}},
                customdata=data.ids[rows],
                hovertemplate="Trial %{y}<br>%{base} + %{x:,.0f} ms<extra></extra>",
            )
        )
    fig = figure(
        *traces,
        barmode="overlay",
        bargap=0.1,
        xaxis={"type": "date", "title": {"text": f"Time ({zone})"}},
        yaxis_title="Trial",
        showlegend=True,
    )
    return Chart(fig, note, clickable=True)


def _iso(seconds: float, zone: Any) -> str:
    return datetime.fromtimestamp(seconds, tz=zone).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
