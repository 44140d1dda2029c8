"""Plotly figures for the study pages, bounded for large studies.

Every chart is built in Python and shipped as JSON, one request per chart. The
browser never receives more than a bounded number of points: beyond a limit a
chart samples, bins or aggregates, and its ``note`` says so on the chart.
``optuna.visualization`` is the reference for what each chart shows, not the
implementation: its contour plot alone emits 1.2 GB of JSON at 10 000 trials.

Trials come from the process's shared DjangoStorage (finished trials are read
from the database once per process), are turned into NumPy columns once per
trial-count signature, and each chart's JSON is cached under that signature, so
a page polling a running study recomputes a chart only when trials changed.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import optuna
import plotly.graph_objects as go
from django.core.cache import cache
from django.db.models import Count
from django.utils import timezone
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.study._multi_objective import _is_pareto_front
from optuna.trial import TrialState
from plotly.io._json import to_json_plotly
from plotly.subplots import make_subplots

from studies.models import Study, Trial
from studies.storage import get_storage, parse_distribution

# How much of a study reaches the browser. At these limits a chart's JSON stays
# far below 2 MB whatever the study size (NumPy arrays travel as base64).
MAX_POINTS = 5_000  # markers in a scatter (history)
MAX_LINES = 2_000  # polylines in the parallel-coordinate plot
MAX_SLICE_POINTS = 1_500  # trials per slice subplot
MAX_SLICE_PARAMS = 12
MAX_PARALLEL_PARAMS = 30
MAX_CONTOUR_POINTS = 1_000
CONTOUR_BINS = 40
EDF_POINTS = 500
MAX_CURVES = 200  # intermediate-value curves drawn one by one
MAX_CURVE_POINTS = 50_000
CURVE_BINS = 300
MAX_TIMELINE_BARS = 1_000
HYPERVOLUME_CHECKPOINTS = 300

STATE_COLORS = {
    "COMPLETE": "#3b5bdb",
    "PRUNED": "#f59f00",
    "FAIL": "#e03131",
    "RUNNING": "#2f9e44",
    "WAITING": "#868e96",
}
BEST_COLOR = "#e8590c"
FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif'
AXIS = {
    # 10⁻⁴ rather than Plotly's default SI prefixes (100µ), which read oddly for a learning rate.
    "exponentformat": "power",
    "gridcolor": "#edf0f3",
    "zerolinecolor": "#dee2e6",
    "linecolor": "#ced4da",
    "automargin": True,
}
TEMPLATE = go.layout.Template(
    layout={
        "font": {"family": FONT, "size": 12, "color": "#343a40"},
        "paper_bgcolor": "#ffffff",
        "plot_bgcolor": "#ffffff",
        "colorway": ["#3b5bdb", "#e8590c", "#2f9e44", "#ae3ec9", "#1098ad", "#f59f00", "#e03131"],
        "xaxis": AXIS,
        "yaxis": AXIS,
        "margin": {"l": 60, "r": 24, "t": 36, "b": 48},
        "hoverlabel": {"font": {"family": FONT, "size": 12}},
        "legend": {"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"},
    }
)


class ChartError(ValueError):
    """A chart option the user chose is not valid (e.g. an unknown parameter)."""


# Trials as NumPy columns


@dataclass
class TrialData:
    """A study's trials as columns; params are internal reprs (a choice's index), NaN if absent."""

    directions: list[str]
    ids: np.ndarray
    numbers: np.ndarray
    states: np.ndarray
    values: np.ndarray  # (n_trials, n_objectives), NaN where missing
    params: dict[str, np.ndarray]
    distributions: dict[str, BaseDistribution]
    start: np.ndarray  # POSIX seconds, NaN if not started
    complete: np.ndarray
    intermediate: list[tuple[int, dict[int, float]]] = field(default_factory=list)

    @property
    def n_objectives(self) -> int:
        return len(self.directions)

    def state_mask(self, state: TrialState) -> np.ndarray:
        return self.states == state.value

    def objective(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices of completed trials with a finite value for ``index``, and those values."""
        column = self.values[:, index]
        rows = np.flatnonzero(self.state_mask(TrialState.COMPLETE) & np.isfinite(column))
        return rows, column[rows]

    def minimize(self, index: int) -> bool:
        return self.directions[index] != "maximize"


def trial_counts(study_id: int) -> dict[str, int]:
    """Trials per state name (all states present, zeros included): one grouped query."""
    counts = {state.name: 0 for state in TrialState}
    rows = Trial.objects.filter(study_id=study_id).values_list("state").annotate(n=Count("id"))
    for state, n in rows.order_by():
        counts[TrialState(state).name] = n
    return counts


def signature(counts: dict[str, int]) -> str:
    """Changes whenever a trial is added or changes state: the charts' cache version."""
    return "-".join(f"{name[0].lower()}{counts.get(name, 0)}" for name in sorted(counts))


def param_names(study: Study) -> list[str]:
    """Parameters in declaration order, then any only seen in trials (ask/tell clients)."""
    names = [n for n in study.search_space if n in study.param_distributions]
    return names + [n for n in study.param_distributions if n not in study.search_space]


def _posix(dt: datetime | None) -> float:
    return math.nan if dt is None else dt.timestamp()


def build_trial_data(study: Study) -> TrialData:
    trials = get_storage().get_all_trials(study.pk, deepcopy=False)
    n, k = len(trials), max(len(study.directions), 1)
    distributions = {
        name: parse_distribution(study.param_distributions[name]) for name in param_names(study)
    }
    # Converters from external values to the internal repr, one per parameter.
    converters: dict[str, Callable[[Any], float]] = {}
    for name, dist in distributions.items():
        if isinstance(dist, CategoricalDistribution):
            index = {_choice_key(c): i for i, c in enumerate(dist.choices)}
            converters[name] = lambda v, index=index: index.get(_choice_key(v), math.nan)
        else:
            converters[name] = float
    params = {name: np.full(n, np.nan) for name in distributions}
    values = np.full((n, k), np.nan)
    intermediate = []
    for i, t in enumerate(trials):
        if t.values is not None and len(t.values) == k:
            values[i] = t.values
        for name, value in t.params.items():
            if name in params:
                params[name][i] = converters[name](value)
        if t.intermediate_values:
            intermediate.append((i, t.intermediate_values))
    return TrialData(
        directions=list(study.directions) or ["minimize"],
        ids=np.fromiter((t._trial_id for t in trials), np.int64, n),
        numbers=np.fromiter((t.number for t in trials), np.int64, n),
        states=np.fromiter((t.state.value for t in trials), np.int8, n),
        values=values,
        params=params,
        distributions=distributions,
        start=np.fromiter((_posix(t.datetime_start) for t in trials), np.float64, n),
        complete=np.fromiter((_posix(t.datetime_complete) for t in trials), np.float64, n),
        intermediate=intermediate,
    )


def _choice_key(value: Any) -> tuple[str, Any]:
    # True and 1 are different choices; nan never equals itself.
    if isinstance(value, float) and math.isnan(value):
        return ("nan", None)
    return (type(value).__name__ if isinstance(value, bool | str | None) else "num", value)


class _DataCache:
    """The latest TrialData per study, kept while its signature holds (a few studies only)."""

    def __init__(self, size: int = 6) -> None:
        self.size = size
        self.lock = threading.Lock()
        self.entries: OrderedDict[int, tuple[str, TrialData]] = OrderedDict()

    def get(self, study: Study, sig: str) -> TrialData:
        with self.lock:
            found = self.entries.get(study.pk)
            if found and found[0] == sig:
                self.entries.move_to_end(study.pk)
                return found[1]
        data = build_trial_data(study)
        with self.lock:
            self.entries[study.pk] = (sig, data)
            self.entries.move_to_end(study.pk)
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)
        return data


trial_data_cache = _DataCache()


# Helpers


def sample(numbers: np.ndarray, limit: int, keep: np.ndarray | None = None) -> np.ndarray:
    """Sorted positions of at most ``limit`` items, always including ``keep``.

    The choice hashes trial numbers instead of drawing at random, so a trial
    stays in (or out of) the sample as the study grows and refreshes do not
    reshuffle the chart.
    """
    n = len(numbers)
    if n <= limit:
        return np.arange(n)
    rank = (numbers.astype(np.uint64) * np.uint64(2654435761)) % np.uint64(2**32)
    if keep is not None and len(keep):
        rank[keep[-limit:]] = 0
    return np.sort(np.argpartition(rank, limit - 1)[:limit])


def fmt(n: int) -> str:
    return f"{n:,}".replace(",", " ")


def value_label(data: TrialData, index: int) -> str:
    if data.n_objectives == 1:
        return "Objective value"
    return f"Objective {index + 1} ({data.directions[index]})"


def is_log(dist: BaseDistribution) -> bool:
    return bool(getattr(dist, "log", False))


def choice_labels(dist: CategoricalDistribution) -> list[str]:
    return [str(c) for c in dist.choices]


def figure(*traces: Any, **layout: Any) -> go.Figure:
    fig = go.Figure(data=list(traces))
    fig.update_layout(template=TEMPLATE, **layout)
    return fig


def check_objective(data: TrialData, objective: int) -> int:
    if not 0 <= objective < data.n_objectives:
        raise ChartError(f"objective must be between 0 and {data.n_objectives - 1}")
    return objective


@dataclass
class Chart:
    figure: go.Figure | None = None
    note: str = ""
    empty: str = ""
    # Whether each point's customdata (or its first item) is a trial id to open on click.
    clickable: bool = False

    def to_json(self) -> str:
        payload: dict[str, Any] = {
            "note": self.note,
            "empty": self.empty,
            "clickable": self.clickable,
            "figure": None,
        }
        if self.figure is not None:
            payload["figure"] = self.figure.to_dict()
        return to_json_plotly(payload)


# Charts


def history_chart(data: TrialData, objective: int = 0) -> Chart:
    objective = check_objective(data, objective)
    rows, values = data.objective(objective)
    if not len(rows):
        return Chart(empty="No completed trials yet.")
    numbers = data.numbers[rows]
    best = (
        np.minimum.accumulate(values) if data.minimize(objective) else np.maximum.accumulate(values)
    )
    improved = np.flatnonzero(np.r_[True, best[1:] != best[:-1]])
    shown = sample(numbers, MAX_POINTS, keep=improved)
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


def importance_values(
    study: Study, data: TrialData, objective: int
) -> tuple[dict[str, float], int]:
    """PED-ANOVA importances, computed once per number of completed trials."""
    n_complete = int(data.state_mask(TrialState.COMPLETE).sum())
    key = f"hub:importances:{study.pk}:{n_complete}:{objective}"
    found = cache.get(key)
    if found is None:
        optuna_study = optuna.load_study(study_name=study.name, storage=get_storage())
        sign = 1.0 if data.minimize(objective) else -1.0
        target = None
        if data.n_objectives > 1:
            # PED-ANOVA treats lower as better, hence the sign.
            target = lambda t: sign * t.values[objective]  # noqa: E731
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importances = optuna.importance.get_param_importances(
                optuna_study,
                evaluator=optuna.importance.PedAnovaImportanceEvaluator(),
                target=target,
            )
        found = (dict(importances), n_complete)
        cache.set(key, found, timeout=24 * 3600)
    return found


def importances_chart(study: Study, data: TrialData, objective: int = 0) -> Chart:
    objective = check_objective(data, objective)
    rows, _ = data.objective(objective)
    if len(rows) < 2:
        return Chart(empty="Importances need at least two completed trials.")
    if not data.params:
        return Chart(empty="This study has no parameters.")
    importances, n_complete = importance_values(study, data, objective)
    names = sorted(importances, key=lambda name: importances[name])
    bar = go.Bar(
        x=[importances[n] for n in names],
        y=names,
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
    text = [_short(10**t if log else t) for t in ticks]
    if absent:
        gap = (high - low) * 0.12
        shown = np.where(np.isfinite(shown), shown, low - gap)
        ticks, text = np.r_[low - gap, ticks], ["(absent)", *text]
        low -= gap
    return {"values": shown, "tickvals": ticks, "ticktext": text, "range": [low, high]}


def _short(x: float) -> str:
    return f"{x:.3g}"


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
    best = np.sort(order[: max(1, MAX_LINES // 10)])
    shown = sample(data.numbers[rows], MAX_LINES, keep=best)
    rows, values = rows[shown], values[shown]
    notes = []
    if len(shown) < len(data.objective(objective)[0]):
        n_all = len(data.objective(objective)[0])
        notes.append(
            f"Showing {fmt(len(shown))} of {fmt(n_all)} completed trials "
            f"(the best {fmt(len(best))} and a fixed sample of the rest)."
        )
    names = list(data.params)[:MAX_PARALLEL_PARAMS]
    if len(data.params) > len(names):
        notes.append(f"First {len(names)} of {len(data.params)} parameters.")
    dimensions = [{"label": value_label(data, objective), "values": values}]
    for name in names:
        dimensions.append(
            {"label": name, **_axis_for(data.distributions[name], data.params[name][rows])}
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
    names = list(data.params)[:MAX_SLICE_PARAMS]
    shown = sample(data.numbers[rows], MAX_SLICE_POINTS)
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
                name=name,
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
                hovertemplate=f"{name}: %{{x:.4g}}<br>Value %{{y:.6g}}<extra></extra>"
                if not categorical
                else "Value %{y:.6g}<extra></extra>",
            ),
            row=row,
            col=col,
        )
        axis: dict[str, Any] = {"title": {"text": name}}
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
    edges = np.linspace(low, high, CONTOUR_BINS + 1)
    index = np.clip(np.searchsorted(edges, shown, side="right") - 1, 0, CONTOUR_BINS - 1)
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
    surface.hovertemplate = f"{x}: %{{x:.4g}}<br>{y}: %{{y:.4g}}<br>Mean %{{z:.6g}}<extra></extra>"
    shown = sample(data.numbers[rows], MAX_CONTOUR_POINTS)
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
        hovertemplate=f"{x}: %{{x:.4g}}<br>{y}: %{{y:.4g}}<extra></extra>",
    )
    fig = figure(surface, points, xaxis={"title": {"text": x}, **xaxis})
    fig.update_yaxes(title_text=y, **yaxis)
    note = f"Colour: mean objective of the trials in each cell ({fmt(len(rows))} trials"
    note += ", binned 40 × 40)." if not categorical else ", one cell per choice or bin)."
    if len(shown) < len(rows):
        note += f" Dots: a fixed sample of {fmt(len(shown))} trials."
    return Chart(fig, note, clickable=True)


def edf_chart(data: TrialData, objective: int = 0) -> Chart:
    objective = check_objective(data, objective)
    _, values = data.objective(objective)
    if not len(values):
        return Chart(empty="No completed trials yet.")
    ordered = np.sort(values)
    note = ""
    if len(ordered) > EDF_POINTS:
        fractions = np.linspace(0, 1, EDF_POINTS)
        xs = np.quantile(ordered, fractions)
        note = f"Distribution of {fmt(len(ordered))} values, drawn at {EDF_POINTS} quantiles."
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


def intermediate_chart(data: TrialData) -> Chart:
    curves = data.intermediate
    if not curves:
        return Chart(empty="No trial has reported intermediate values.")
    notes = []
    positions = np.array([i for i, _ in curves])
    chosen = set(sample(data.numbers[positions], MAX_CURVES).tolist())
    drawn = [curves[j] for j in sorted(chosen)]
    total = sum(len(c) for _, c in drawn)
    stride = max(1, math.ceil(total / MAX_CURVE_POINTS))
    traces: list[Any] = []
    band: list[Any] = []
    if len(drawn) < len(curves):
        steps = np.concatenate([np.fromiter(c.keys(), float, len(c)) for _, c in curves])
        vals = np.concatenate([np.fromiter(c.values(), float, len(c)) for _, c in curves])
        band = _quantile_band(steps, vals)
        notes.append(
            f"Lines: a fixed sample of {fmt(len(drawn))} of {fmt(len(curves))} trials; "
            "the band is the median and 10–90 % range over all of them."
        )
    if stride > 1:
        notes.append(f"Every {stride}th step is drawn.")
    # One trace per state, curves separated by NaN: a few traces, any number of trials.
    for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.FAIL):
        xs: list[np.ndarray] = []
        ys: list[np.ndarray] = []
        who: list[np.ndarray] = []
        for i, curve in drawn:
            if data.states[i] != state.value:
                continue
            steps = sorted(curve)[::stride]
            xs += [np.array(steps, float), np.array([np.nan])]
            ys += [np.array([curve[s] for s in steps], float), np.array([np.nan])]
            who.append(np.full(len(steps) + 1, data.numbers[i]))
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
    if len(unique) > CURVE_BINS:
        edges = np.linspace(unique[0], unique[-1], CURVE_BINS + 1)
        group = np.clip(np.searchsorted(edges, steps, side="right") - 1, 0, CURVE_BINS - 1)
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


def timeline_chart(data: TrialData) -> Chart:
    started = np.flatnonzero(np.isfinite(data.start))
    if not len(started):
        return Chart(empty="No trial has started yet.")
    note = ""
    if len(started) > MAX_TIMELINE_BARS:
        note = f"The latest {fmt(MAX_TIMELINE_BARS)} of {fmt(len(started))} trials."
        started = started[-MAX_TIMELINE_BARS:]
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


def _losses(data: TrialData) -> tuple[np.ndarray, np.ndarray]:
    """Completed trials with all values finite, and their values as losses (lower is better)."""
    complete = data.state_mask(TrialState.COMPLETE) & np.isfinite(data.values).all(axis=1)
    rows = np.flatnonzero(complete)
    signs = np.array([1.0 if d != "maximize" else -1.0 for d in data.directions])
    return rows, data.values[rows] * signs


def pareto_mask(losses: np.ndarray) -> np.ndarray:
    if not len(losses):
        return np.zeros(0, bool)
    return _is_pareto_front(losses, assume_unique_lexsorted=False)


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
    shown_rest = rest[sample(data.numbers[rest], MAX_POINTS)] if len(rest) else rest
    shown_front = front[sample(data.numbers[front], MAX_POINTS)]
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
    from optuna._hypervolume import compute_hypervolume

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
    checkpoints = np.unique(np.linspace(0, n - 1, min(n, HYPERVOLUME_CHECKPOINTS)).astype(int))
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
        _short(v) for v in reference * np.where(np.array(data.directions) == "maximize", -1, 1)
    )
    note = f"Reference point ({ref}): the worst value of each objective plus 10 % of its range."
    if len(checkpoints) < n:
        note += f" Computed at {len(checkpoints)} points over {fmt(n)} trials."
    return Chart(fig, note)


# The registry the views use: name -> (title, needs several objectives?)

CHARTS: dict[str, tuple[str, bool | None]] = {
    "history": ("Optimization history", None),
    "importances": ("Parameter importances", None),
    "parallel": ("Parallel coordinate", None),
    "slice": ("Slice", None),
    "contour": ("Contour", None),
    "edf": ("Empirical distribution (EDF)", None),
    "intermediate": ("Intermediate values", None),
    "timeline": ("Timeline", None),
    "pareto": ("Pareto front", True),
    "hypervolume": ("Hypervolume history", True),
}


def charts_for(study: Study) -> list[tuple[str, str]]:
    multi = study.is_multi_objective
    return [
        (name, title) for name, (title, needs) in CHARTS.items() if needs is None or needs == multi
    ]


def build(study: Study, name: str, data: TrialData, options: dict[str, Any]) -> Chart:
    objective = options.get("objective", 0)
    if name == "history":
        return history_chart(data, objective)
    if name == "importances":
        return importances_chart(study, data, objective)
    if name == "parallel":
        return parallel_chart(data, objective)
    if name == "slice":
        return slice_chart(data, objective)
    if name == "contour":
        return contour_chart(data, objective, options.get("x"), options.get("y"))
    if name == "edf":
        return edf_chart(data, objective)
    if name == "intermediate":
        return intermediate_chart(data)
    if name == "timeline":
        return timeline_chart(data)
    if name == "pareto":
        return pareto_chart(data)
    if name == "hypervolume":
        return hypervolume_chart(data)
    raise ChartError(f"unknown chart {name!r}")


def chart_json(study: Study, name: str, options: dict[str, Any], sig: str | None = None) -> str:
    """The chart's JSON, cached until the study's trials change (``sig``)."""
    if name not in CHARTS:
        raise ChartError(f"unknown chart {name!r}")
    sig = sig or signature(trial_counts(study.pk))
    key = f"hub:chart:{study.pk}:{name}:{sig}:" + ",".join(
        f"{k}={options[k]}" for k in sorted(options)
    )
    found = cache.get(key)
    if found is None:
        data = trial_data_cache.get(study, sig)
        found = build(study, name, data, options).to_json()
        cache.set(key, found, timeout=3600)
    return found


def compare_chart(studies: list[Study]) -> Chart:
    """Best value so far of each study against trial number, overlaid."""
    traces = []
    notes = []
    for study in studies:
        rows = list(
            Trial.objects.filter(study=study, state=TrialState.COMPLETE)
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
        best = np.minimum.accumulate(values) if minimize else np.maximum.accumulate(values)
        corners = np.r_[np.flatnonzero(np.r_[True, best[1:] != best[:-1]]), len(best) - 1]
        traces.append(
            go.Scatter(
                x=numbers[corners],
                y=best[corners],
                mode="lines",
                name=f"{study.name} ({(study.directions or ['minimize'])[0]})",
                line={"shape": "hv", "width": 2},
                hovertemplate=f"{study.name}<br>Trial %{{x}}<br>Best %{{y:.6g}}<extra></extra>",
            )
        )
    if not traces:
        return Chart(empty="None of these studies has a completed trial yet.")
    fig = figure(*traces, xaxis_title="Trial", yaxis_title="Best value so far (first objective)")
    fig.update_layout(legend={"orientation": "h", "y": -0.2, "yanchor": "top"})
    return Chart(fig, " ".join(notes))
