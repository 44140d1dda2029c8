"""The compare page's chart: the best value so far of several studies, overlaid."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from studies.charts.base import Chart, figure, label, running_best
from studies.models import Study


def compare_chart(studies: list[Study]) -> Chart:
    """Best value so far of each study against trial number, overlaid."""
    traces = []
    notes = []
    for study in studies:
        rows = list(
            study.trials.complete()
            .exclude(value=None)
            .order_by("number")
            .values_list("number", "value")
        )
        if not rows:
            notes.append(f"{study.name} has no completed trials.")
            continue
        numbers = np.array([r[0] for r in rows])
        values = np.array([r[1] for r in rows], float)
        finite = np.isfinite(values)
        numbers, values = numbers[finite], values[finite]
        if not len(values):
            continue
        minimize = (study.directions or ["minimize"])[0] != "maximize"
        best, improved = running_best(values, minimize)
        corners = np.r_[improved, len(best) - 1]
        name = label(study.name)
        traces.append(
            go.Scatter(
                x=numbers[corners],
                y=best[corners],
                mode="lines",
                name=f"{name} ({(study.directions or ['minimize'])[0]})",
                line={"shape": "hv", "width": 2},
                hovertemplate=f"{name}<br>Trial %{{x}}<br>Best %{{y:.6g}}<extra></extra>",
            )
        )
    if not traces:
        return Chart(empty="None of these studies has a completed trial yet.")
    fig = figure(*traces, xaxis_title="Trial", yaxis_title="Best value so far (first objective)")
    fig.update_layout(legend={"orientation": "h", "y": -0.2, "yanchor": "top"})
    return Chart(fig, " ".join(notes))
