"""Charts of multi-objective studies: the Pareto front and the hypervolume history."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from optuna._hypervolume import compute_hypervolume
from optuna.trial import TrialState

from studies.charts import limits
from studies.charts.base import (
    BEST_COLOR,
    STATE_COLORS,
    Chart,
    TrialData,
    figure,
    fmt,
    sample,
    short,
    value_label,
)
from studies.models.study import pareto_mask


def _losses(data: TrialData) -> tuple[np.ndarray, np.ndarray]:
    """Completed trials with all values finite, and their values as losses (lower is better)."""
    complete = data.state_mask(TrialState.COMPLETE) & np.isfinite(data.values).all(axis=1)
    rows = np.flatnonzero(complete)
    signs = np.array([1.0 if d != "maximize" else -1.0 for d in data.directions])
    return rows, data.values[rows] * signs


def pareto_chart(data: TrialData) -> Chart:
    if data.n_objectives < 2:
        return Chart(empty="The Pareto front is for studies with two or more objectives.")
    rows, losses = _losses(data)
    if not len(rows):
        return Chart(empty="No completed trials yet.")
    on_front = pareto_mask(losses)
    front, rest = rows[on_front], rows[~on_front]
    notes = []
    if data.n_objectives > 2:
        notes.append(f"Objectives 1 and 2 of {data.n_objectives}.")
    shown_rest = rest[sample(data.numbers[rest], limits.MAX_POINTS)] if len(rest) else rest
    shown_front = front[sample(data.numbers[front], limits.MAX_POINTS)]
    if len(shown_rest) < len(rest) or len(shown_front) < len(front):
        notes.append(
            f"Showing {fmt(len(shown_front) + len(shown_rest))} of {fmt(len(rows))} trials "
            f"({fmt(len(front))} on the front)."
        )
    line_order = shown_front[np.argsort(data.values[shown_front, 0])]
    hover = "Trial %{customdata[1]}<br>%{x:.6g}, %{y:.6g}<extra></extra>"
    traces = [
        go.Scatter(
            x=data.values[shown_rest, 0],
            y=data.values[shown_rest, 1],
            mode="markers",
            name="Dominated",
            marker={"size": 6, "color": "#adb5bd", "opacity": 0.6},
            customdata=np.c_[data.ids[shown_rest], data.numbers[shown_rest]],
            hovertemplate=hover,
        ),
        go.Scatter(
            x=data.values[line_order, 0],
            y=data.values[line_order, 1],
            mode="lines+markers",
            name="Pareto front",
            line={"color": BEST_COLOR, "width": 1, "dash": "dot", "shape": "linear"},
            marker={"size": 8, "color": BEST_COLOR, "line": {"width": 1, "color": "#fff"}},
            customdata=np.c_[data.ids[line_order], data.numbers[line_order]],
            hovertemplate=hover,
        ),
    ]
    fig = figure(*traces, xaxis_title=value_label(data, 0), yaxis_title=value_label(data, 1))
    return Chart(fig, " ".join(notes), clickable=True)


def hypervolume_chart(data: TrialData) -> Chart:
    if data.n_objectives < 2:
        return Chart(empty="Hypervolume is for studies with two or more objectives.")
    rows, losses = _losses(data)
    if not len(rows):
        return Chart(empty="No completed trials yet.")
    # Reference point: the worst value seen in each objective plus 10 % of its range.
    worst, best = losses.max(axis=0), losses.min(axis=0)
    spread = np.where(worst > best, worst - best, np.maximum(np.abs(worst), 1.0))
    reference = worst + 0.1 * spread
    n = len(rows)
    checkpoints = np.unique(
        np.linspace(0, n - 1, min(n, limits.HYPERVOLUME_CHECKPOINTS)).astype(int)
    )
    front = np.empty((0, losses.shape[1]))
    volumes = []
    done = 0
    for stop in checkpoints:
        # Grow the front with the trials since the previous checkpoint.
        batch = np.vstack([front, losses[done : stop + 1]])
        front = batch[pareto_mask(batch)]
        done = stop + 1
        volumes.append(compute_hypervolume(np.unique(front, axis=0), reference, assume_pareto=True))
    line = go.Scatter(
        x=data.numbers[rows][checkpoints],
        y=volumes,
        mode="lines+markers" if len(checkpoints) < 60 else "lines",
        line={"color": STATE_COLORS["COMPLETE"], "width": 2, "shape": "hv"},
        hovertemplate="Trial %{x}<br>Hypervolume %{y:.6g}<extra></extra>",
    )
    fig = figure(line, xaxis_title="Trial", yaxis_title="Hypervolume")
    ref = ", ".join(
        short(v) for v in reference * np.where(np.array(data.directions) == "maximize", -1, 1)
    )
    note = f"Reference point ({ref}): the worst value of each objective plus 10 % of its range."
    if len(checkpoints) < n:
        note += f" Computed at {len(checkpoints)} points over {fmt(n)} trials."
    return Chart(fig, note)
