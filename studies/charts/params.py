"""Charts of the parameters: importances, parallel coordinate, slice, contour."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import optuna
import optuna.importance  # Optuna imports it on first use: here, no request waits ~1 s
import plotly.graph_objects as go
from django.core.cache import cache
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.study import StudyDirection
from plotly.subplots import make_subplots

from studies.charts import limits
from studies.charts.base import (
    STATE_COLORS,
    TEMPLATE,
    Chart,
    ChartError,
    TrialData,
    check_objective,
    choice_labels,
    figure,
    fmt,
    is_log,
    label,
    sample,
    short,
    value_label,
)
from studies.models import Study


def importance_values(
    study: Study, data: TrialData, objective: int
) -> tuple[dict[str, float], int, int]:
    """PED-ANOVA importances over a fixed sample of the completed trials (at most
    ``limits.MAX_IMPORTANCE_TRIALS``), computed once per number of completed trials.

    Returns them with how many trials they were computed from, and how many completed.
    """
    rows, values = data.objective(objective)
    key = f"hub:importances:sampled:{study.pk}:{len(rows)}:{objective}"
    found = cache.get(key)
    if found is None:
        chosen = sample(data.numbers[rows], limits.MAX_IMPORTANCE_TRIALS)
        # A study of its own, lower is better (PED-ANOVA's convention for a target).
        sign = 1.0 if data.minimize(objective) else -1.0
        storage = optuna.storages.InMemoryStorage()
        name = storage.get_study_name_from_id(storage.create_new_study([StudyDirection.MINIMIZE]))
        sampled = optuna.Study(study_name=name, storage=storage)
        sampled.add_trials(
            [_frozen(data, rows[j], sign * float(values[j])) for j in chosen.tolist()]
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importances = optuna.importance.get_param_importances(
                sampled, evaluator=optuna.importance.PedAnovaImportanceEvaluator()
            )
        found = (dict(importances), len(chosen), len(rows))
        cache.set(key, found, timeout=24 * 3600)
    return found


def _frozen(data: TrialData, row: int, value: float) -> optuna.trial.FrozenTrial:
    """Row ``row`` of ``data`` as a completed trial with ``value``, for an evaluator."""
    params, distributions = {}, {}
    for name, dist in data.distributions.items():
        internal = data.params[name][row]
        # A parameter the trial lacks, or drawn from an earlier (compatible) range.
        if not math.isnan(internal) and dist._contains(internal):
            params[name] = dist.to_external_repr(internal)
            distributions[name] = dist
    return optuna.trial.create_trial(value=value, params=params, distributions=distributions)


def importances_chart(study: Study, data: TrialData, objective: int = 0) -> Chart:
    objective = check_objective(data, objective)
    rows, _ = data.objective(objective)
    if len(rows) < 2:
        return Chart(empty="Importances need at least two completed trials.")
    if not data.params:
        return Chart(empty="This study has no parameters.")
    importances, n_used, n_complete = importance_values(study, data, objective)
    names = sorted(importances, key=lambda name: importances[name])
    bar = go.Bar(
        x=[importances[n] for n in names],
        y=[label(n) for n in names],
        orientation="h",
        marker={"color": STATE_COLORS["COMPLETE"]},
        text=[f"{importances[n]:.2f}" for n in names],
        textposition="outside",
        cliponaxis=False,
        hovertemplate="%{y}: %{x:.3f}<extra></extra>",
    )
    fig = figure(
        bar,
        xaxis_title="Importance (PED-ANOVA)",
        yaxis={"ticksuffix": "  "},
        height=max(220, 60 + 28 * len(names)),
        margin={"l": 20, "r": 40},
    )
    fig.update_xaxes(rangemode="tozero")
    note = f"PED-ANOVA over {fmt(n_complete)} completed trials; recomputed as trials complete."
    if n_used < n_complete:
        note = (
            f"PED-ANOVA over a fixed sample of {fmt(n_used)} of {fmt(n_complete)} completed "
            "trials; recomputed as trials complete."
        )
    return Chart(fig, note)


def _axis_for(dist: BaseDistribution, values: np.ndarray) -> dict[str, Any]:
    """A parallel-coordinate dimension; absent values sit on an extra '(absent)' tick."""
    present = values[np.isfinite(values)]
    absent = len(present) < len(values)
    if isinstance(dist, CategoricalDistribution):
        tickvals = list(range(len(dist.choices)))
        ticktext = choice_labels(dist)
        if absent:
            values = np.where(np.isfinite(values), values, -1.0)
            tickvals, ticktext = [-1, *tickvals], ["(absent)", *ticktext]
        return {
            "values": values,
            "tickvals": tickvals,
            "ticktext": ticktext,
            "range": [min(tickvals), max(tickvals)],
        }
    log = is_log(dist)
    shown = np.log10(values) if log else values.copy()
    low, high = (float(np.nanmin(shown)), float(np.nanmax(shown))) if len(present) else (0.0, 1.0)
    if high == low:
        low, high = low - 0.5, high + 0.5
    ticks = nice_ticks(low, high, integer=log)
    low, high = float(ticks[0]), float(ticks[-1])
    text = [short(10**t if log else t) for t in ticks]
    if absent:
        gap = (high - low) * 0.12
        shown = np.where(np.isfinite(shown), shown, low - gap)
        ticks, text = np.r_[low - gap, ticks], ["(absent)", *text]
        low -= gap
    return {"values": shown, "tickvals": ticks, "ticktext": text, "range": [low, high]}


def nice_ticks(low: float, high: float, integer: bool = False) -> np.ndarray:
    """About five round tick values covering [low, high]; whole numbers for log10 axes."""
    raw = (high - low) / 4
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    if integer:
        step = max(1.0, float(round(raw)))
    start, stop = math.floor(low / step) * step, math.ceil(high / step) * step
    # Rounding noise would print 0.30000000000000004 as a label.
    return np.round(np.arange(start, stop + step / 2, step), 12)


def parallel_chart(data: TrialData, objective: int = 0) -> Chart:
    objective = check_objective(data, objective)
    rows, values = data.objective(objective)
    if not len(rows):
        return Chart(empty="No completed trials yet.")
    if not data.params:
        return Chart(empty="This study has no parameters.")
    order = np.argsort(values if data.minimize(objective) else -values)
    best = np.sort(order[: max(1, limits.MAX_LINES // 10)])
    shown = sample(data.numbers[rows], limits.MAX_LINES, keep=best)
    rows, values = rows[shown], values[shown]
    notes = []
    if len(shown) < len(data.objective(objective)[0]):
        n_all = len(data.objective(objective)[0])
        notes.append(
            f"Showing {fmt(len(shown))} of {fmt(n_all)} completed trials "
            f"(the best {fmt(len(best))} and a fixed sample of the rest)."
        )
    names = list(data.params)[: limits.MAX_PARALLEL_PARAMS]
    if len(data.params) > len(names):
        notes.append(f"First {len(names)} of {len(data.params)} parameters.")
    dimensions = [{"label": value_label(data, objective), "values": values}]
    for name in names:
        dimensions.append(
            {"label": label(name), **_axis_for(data.distributions[name], data.params[name][rows])}
        )
    trace = go.Parcoords(
        dimensions=dimensions,
        line={
            "color": values,
            "colorscale": "Blues",
            "reversescale": data.minimize(objective),
            "showscale": True,
            "colorbar": {"title": {"text": "Value"}, "thickness": 12},
        },
        labelangle=-20,
        labelside="bottom",
    )
    fig = figure(trace, margin={"l": 70, "r": 70, "t": 40, "b": 70})
    return Chart(fig, " ".join(notes))


def slice_chart(data: TrialData, objective: int = 0) -> Chart:
    objective = check_objective(data, objective)
    rows, values = data.objective(objective)
    if not len(rows):
        return Chart(empty="No completed trials yet.")
    if not data.params:
        return Chart(empty="This study has no parameters.")
    names = list(data.params)[: limits.MAX_SLICE_PARAMS]
    shown = sample(data.numbers[rows], limits.MAX_SLICE_POINTS)
    notes = []
    if len(shown) < len(rows):
        notes.append(f"Showing a fixed sample of {fmt(len(shown))} of {fmt(len(rows))} trials.")
    if len(data.params) > len(names):
        notes.append(f"First {len(names)} of {len(data.params)} parameters.")
    rows, values = rows[shown], values[shown]
    cols = min(3, len(names))
    n_rows = math.ceil(len(names) / cols)
    fig = make_subplots(
        rows=n_rows,
        cols=cols,
        shared_yaxes=True,
        horizontal_spacing=0.04,
        vertical_spacing=min(0.12, 0.5 / n_rows),
    )
    numbers = data.numbers[rows]
    for i, name in enumerate(names):
        dist = data.distributions[name]
        x = data.params[name][rows]
        present = np.isfinite(x)
        row, col = i // cols + 1, i % cols + 1
        categorical = isinstance(dist, CategoricalDistribution)
        if categorical:
            # Spread a category's points a little so they do not hide each other.
            x = x + (sample_jitter(numbers) * 0.3)
        fig.add_trace(
            go.Scatter(
                x=x[present],
                y=values[present],
                mode="markers",
                name=label(name),
                showlegend=False,
                customdata=data.ids[rows][present],
                marker={
                    "size": 5,
                    "color": numbers[present],
                    "colorscale": "Blues",
                    "cmin": int(data.numbers.min()),
                    "cmax": int(data.numbers.max()),
                    "showscale": i == 0,
                    "colorbar": {"title": {"text": "Trial"}, "thickness": 12},
                    "line": {"width": 0.5, "color": "#ffffff"},
                },
                hovertemplate=f"{label(name)}: %{{x:.4g}}<br>Value %{{y:.6g}}<extra></extra>"
                if not categorical
                else "Value %{y:.6g}<extra></extra>",
            ),
            row=row,
            col=col,
        )
        axis: dict[str, Any] = {"title": {"text": label(name)}}
        if categorical:
            axis |= {"tickvals": list(range(len(dist.choices))), "ticktext": choice_labels(dist)}
        elif is_log(dist):
            axis |= log_axis(x[present])
        fig.update_xaxes(axis, row=row, col=col)
    fig.update_yaxes(title_text=value_label(data, objective), col=1)
    fig.update_layout(template=TEMPLATE, height=max(320, 260 * n_rows))
    return Chart(fig, " ".join(notes), clickable=True)


def sample_jitter(numbers: np.ndarray) -> np.ndarray:
    """A deterministic offset in [-0.5, 0.5) per trial number."""
    return ((numbers.astype(np.uint64) * np.uint64(40503)) % np.uint64(1000)) / 1000.0 - 0.5


def _bins(dist: BaseDistribution, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """Bin index of each value, the bin centres (in axis units) and the axis settings."""
    if isinstance(dist, CategoricalDistribution):
        n = len(dist.choices)
        axis = {"tickvals": list(range(n)), "ticktext": choice_labels(dist)}
        return values.astype(np.int64), np.arange(n, dtype=float), axis
    log = is_log(dist)
    shown = np.log10(values) if log else values
    low, high = float(shown.min()), float(shown.max())
    if high == low:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, limits.CONTOUR_BINS + 1)
    index = np.clip(np.searchsorted(edges, shown, side="right") - 1, 0, limits.CONTOUR_BINS - 1)
    centres = (edges[:-1] + edges[1:]) / 2
    if log:
        return index, 10**centres, log_axis(values)
    return index, centres, {}


def log_axis(values: np.ndarray) -> dict[str, Any]:
    """A log axis; across several decades, one label per decade rather than 2 and 5 between."""
    axis: dict[str, Any] = {"type": "log"}
    if len(values) and np.log10(values.max() / values.min()) >= 2:
        axis["dtick"] = 1
    return axis


def contour_chart(
    data: TrialData, objective: int = 0, x: str | None = None, y: str | None = None
) -> Chart:
    objective = check_objective(data, objective)
    names = list(data.params)
    if len(names) < 2:
        return Chart(empty="The contour plot needs at least two parameters.")
    x = x or names[0]
    y = y or next(n for n in names if n != x)
    for name in (x, y):
        if name not in data.params:
            raise ChartError(f"{name!r} is not a parameter of this study")
    if x == y:
        raise ChartError("choose two different parameters")
    rows, values = data.objective(objective)
    both = np.isfinite(data.params[x][rows]) & np.isfinite(data.params[y][rows])
    rows, values = rows[both], values[both]
    if len(rows) < 2:
        return Chart(empty=f"Fewer than two completed trials have both {x} and {y}.")
    xi, xc, xaxis = _bins(data.distributions[x], data.params[x][rows])
    yi, yc, yaxis = _bins(data.distributions[y], data.params[y][rows])
    # Mean objective per cell, NaN for empty cells; one pass with bincount.
    cells = yi * len(xc) + xi
    size = len(xc) * len(yc)
    sums = np.bincount(cells, weights=values, minlength=size)
    counts = np.bincount(cells, minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (sums / counts).reshape(len(yc), len(xc))
    categorical = any(isinstance(data.distributions[n], CategoricalDistribution) for n in (x, y))
    colors = {
        "colorscale": "Blues",
        "reversescale": data.minimize(objective),
        "colorbar": {"title": {"text": "Value"}, "thickness": 12},
    }
    if categorical:
        surface = go.Heatmap(x=xc, y=yc, z=z, hoverongaps=False, **colors)
    else:
        surface = go.Contour(
            x=xc, y=yc, z=z, connectgaps=True, line={"width": 0.5}, ncontours=15, **colors
        )
    x_label, y_label = label(x), label(y)
    surface.hovertemplate = (
        f"{x_label}: %{{x:.4g}}<br>{y_label}: %{{y:.4g}}<br>Mean %{{z:.6g}}<extra></extra>"
    )
    shown = sample(data.numbers[rows], limits.MAX_CONTOUR_POINTS)
    px, py = data.params[x][rows][shown], data.params[y][rows][shown]
    points = go.Scatter(
        x=px,
        y=py,
        mode="markers",
        name="Trials",
        showlegend=False,
        customdata=data.ids[rows][shown],
        marker={
            "size": 5,
            "color": "#212529",
            "opacity": 0.6,
            "line": {"width": 0.5, "color": "#fff"},
        },
        hovertemplate=f"{x_label}: %{{x:.4g}}<br>{y_label}: %{{y:.4g}}<extra></extra>",
    )
    fig = figure(surface, points, xaxis={"title": {"text": x_label}, **xaxis})
    fig.update_yaxes(title_text=y_label, **yaxis)
    note = f"Colour: mean objective of the trials in each cell ({fmt(len(rows))} trials"
    note += ", binned 40 × 40)." if not categorical else ", one cell per choice or bin)."
    if len(shown) < len(rows):
        note += f" Dots: a fixed sample of {fmt(len(shown))} trials."
    return Chart(fig, note, clickable=True)
