"""The intermediate-values chart: each trial's reported curve, with a quantile band when sampled."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import plotly.graph_objects as go
from optuna.trial import TrialState

from studies.charts import limits
from studies.charts.base import BEST_COLOR, STATE_COLORS, Chart, TrialData, figure, fmt, sample
from studies.charts.data import Curves


def intermediate_chart(data: TrialData, curves: Curves) -> Chart:
    if not len(curves.numbers):
        return Chart(empty="No trial has reported intermediate values.")
    notes = []
    # One curve per trial that reported: its points are curves.*[starts[j]:ends[j]].
    numbers, starts = np.unique(curves.numbers, return_index=True)
    ends = np.r_[starts[1:], len(curves.numbers)]
    # The curves were read after ``data``: a trial added in between is left out.
    rows = np.minimum(np.searchsorted(data.numbers, numbers), len(data.numbers) - 1)
    known = data.numbers[rows] == numbers if len(data.numbers) else np.zeros(len(numbers), bool)
    numbers, starts, ends, states = (
        numbers[known],
        starts[known],
        ends[known],
        data.states[rows[known]],
    )
    if not len(numbers):
        return Chart(empty="No trial has reported intermediate values.")
    chosen = sample(numbers, limits.MAX_CURVES)
    total = int((ends - starts)[chosen].sum())
    stride = max(1, math.ceil(total / limits.MAX_CURVE_POINTS))
    traces: list[Any] = []
    band: list[Any] = []
    if len(chosen) < len(numbers):
        band = _quantile_band(curves.steps, curves.values)
        notes.append(
            f"Lines: a fixed sample of {fmt(len(chosen))} of {fmt(len(numbers))} trials; "
            "the band is the median and 10–90 % range over all of them."
        )
    if stride > 1:
        notes.append(f"Every {stride}th step is drawn.")
    # One trace per state, curves separated by NaN: a few traces, any number of trials.
    for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.FAIL):
        xs: list[np.ndarray] = []
        ys: list[np.ndarray] = []
        who: list[np.ndarray] = []
        for j in chosen[states[chosen] == state.value]:
            points = slice(starts[j], ends[j], stride)
            xs += [curves.steps[points], np.array([np.nan])]
            ys += [curves.values[points], np.array([np.nan])]
            who.append(np.full(len(xs[-2]) + 1, numbers[j]))
        if not xs:
            continue
        traces.append(
            go.Scatter(
                x=np.concatenate(xs),
                y=np.concatenate(ys),
                customdata=np.concatenate(who),
                mode="lines",
                name=state.name.capitalize(),
                line={"color": STATE_COLORS[state.name], "width": 1 if band else 1.4},
                # Many sampled lines are context for the band drawn over them.
                opacity=0.3 if band else 0.8,
                connectgaps=False,
                hovertemplate="Trial %{customdata}<br>Step %{x}<br>Value %{y:.6g}<extra></extra>",
            )
        )
    fig = figure(*traces, *band, xaxis_title="Step", yaxis_title="Intermediate value")
    return Chart(fig, " ".join(notes))


def _quantile_band(steps: np.ndarray, values: np.ndarray) -> list[go.Scatter]:
    finite = np.isfinite(values)
    steps, values = steps[finite], values[finite]
    if not len(steps):
        return []
    unique = np.unique(steps)
    if len(unique) > limits.CURVE_BINS:
        edges = np.linspace(unique[0], unique[-1], limits.CURVE_BINS + 1)
        group = np.clip(np.searchsorted(edges, steps, side="right") - 1, 0, limits.CURVE_BINS - 1)
        centres = (edges[:-1] + edges[1:]) / 2
    else:
        group = np.searchsorted(unique, steps)
        centres = unique
    order = np.lexsort((values, group))
    group, values = group[order], values[order]
    starts = np.searchsorted(group, np.arange(len(centres)))
    ends = np.searchsorted(group, np.arange(len(centres)), side="right")
    keep = ends > starts
    bounds = zip(starts[keep], ends[keep], strict=True)
    q = np.array([np.quantile(values[s:e], [0.1, 0.5, 0.9]) for s, e in bounds])
    x = centres[keep]
    band = "rgba(232, 89, 12, 0.18)"
    return [
        go.Scatter(
            x=x, y=q[:, 2], mode="lines", line={"width": 0}, showlegend=False, hoverinfo="skip"
        ),
        go.Scatter(
            x=x,
            y=q[:, 0],
            mode="lines",
            line={"width": 0},
            fill="tonexty",
            fillcolor=band,
            name="10–90 %",
            hoverinfo="skip",
        ),
        go.Scatter(
            x=x,
            y=q[:, 1],
            mode="lines",
            name="Median",
            line={"color": BEST_COLOR, "width": 2.5},
            hovertemplate="Step %{x:.4g}<br>Median %{y:.6g}<extra></extra>",
        ),
    ]
