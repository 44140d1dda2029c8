"""A trial's page: values, parameters, intermediate values, attributes, command output."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import plotly.graph_objects as go
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET
from optuna.trial import TrialState

from studies import charts
from studies.models import Study, Trial, parse_distribution
from studies.views.assets import plotly_version
from studies.views.common import objective_labels

MAX_CURVE_POINTS = 5000


@login_required
@require_GET
def trial_detail(request: HttpRequest, pk: int) -> HttpResponse:
    readable = Study.objects.readable_by(request.user)
    trials = Trial.objects.filter(study__in=readable).select_related("study", "study__owner")
    trial = get_object_or_404(trials, pk=pk)
    study = trial.study
    directions = study.directions or ["minimize"]
    siblings = study.trials.order_by("number")
    previous = siblings.filter(number__lt=trial.number).order_by("-number").values("pk").first()
    following = siblings.filter(number__gt=trial.number).values("pk").first()
    output_tail = trial.system_attrs.get("hub_output_tail")
    if isinstance(output_tail, list):
        output_tail = "\n".join(map(str, output_tail))
    running = trial.state == TrialState.RUNNING and trial.datetime_start
    context = {
        "trial": trial,
        "study": study,
        "params": param_rows(study, trial),
        "values": list(zip(objective_labels(study), directions, trial.values or [], strict=False)),
        "curve": intermediate_figure(trial),
        "user_attrs": trial.user_attrs,
        "system_attrs": {k: v for k, v in trial.system_attrs.items() if k != "hub_output_tail"},
        "output_tail": output_tail,
        "previous_url": reverse("studies:trial", args=[previous["pk"]]) if previous else "",
        "next_url": reverse("studies:trial", args=[following["pk"]]) if following else "",
        "running_for": (timezone.now() - trial.datetime_start).total_seconds() if running else None,
        "plotly_version": plotly_version(),
    }
    return render(request, "studies/trial_detail.html", context)


def param_rows(study: Study, trial: Trial) -> list[dict[str, Any]]:
    """The trial's parameters in the study's order, each with its declared space if any."""
    params = trial.external_params()
    names = charts.param_names(study) + [n for n in params if n not in study.param_distributions]
    return [
        {
            "name": name,
            "value": params[name],
            "spec": study.search_space.get(name),
            "distribution": parse_distribution(trial.distributions[name]),
        }
        for name in names
        if name in params
    ]


def intermediate_figure(trial: Trial) -> str | None:
    if not trial.intermediate_values:
        return None
    steps = sorted(trial.intermediate_values, key=float)
    stride = max(1, math.ceil(len(steps) / MAX_CURVE_POINTS))
    steps = steps[::stride]
    fig = charts.figure(
        go.Scatter(
            x=np.array([float(s) for s in steps]),
            y=np.array([trial.intermediate_values[s] for s in steps], float),
            mode="lines+markers" if len(steps) <= 100 else "lines",
            line={"color": charts.STATE_COLORS["COMPLETE"], "width": 2},
            hovertemplate="Step %{x}<br>Value %{y:.6g}<extra></extra>",
        ),
        xaxis_title="Step",
        yaxis_title="Intermediate value",
        height=320,
    )
    note = f"Every {stride}th step is drawn." if stride > 1 else ""
    return charts.Chart(fig, note).to_json()
