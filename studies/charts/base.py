"""What every chart shares: trials as NumPy columns (read in ``data.py``), sampling, the look."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import TrialState
from plotly.io._json import to_json_plotly

from studies.models import Study

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


def param_names(study: Study) -> list[str]:
    """Parameters in declaration order, then any only seen in trials (ask/tell clients)."""
    names = [n for n in study.search_space if n in study.param_distributions]
    return names + [n for n in study.param_distributions if n not in study.search_space]


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


def running_best(values: np.ndarray, minimize: bool) -> tuple[np.ndarray, np.ndarray]:
    """The best value so far at each position, and the positions where it improved."""
    best = np.minimum.accumulate(values) if minimize else np.maximum.accumulate(values)
    improved = np.flatnonzero(np.r_[True, best[1:] != best[:-1]])
    return best, improved


def fmt(n: int) -> str:
    return f"{n:,}".replace(",", " ")


def short(x: float) -> str:
    return f"{x:.3g}"


def value_label(data: TrialData, index: int) -> str:
    if data.n_objectives == 1:
        return "Objective value"
    return f"Objective {index + 1} ({data.directions[index]})"


def is_log(dist: BaseDistribution) -> bool:
    return bool(getattr(dist, "log", False))


def label(text: object) -> str:
    """User-provided text (a parameter, a choice, a study name) made safe for a figure.

    Plotly renders titles, tick labels, legend entries and hover text as a
    subset of HTML, links included: a parameter named ``<a href=...>`` would
    plant a link in the chart. Escaped, it shows as typed. Quotes stay as they
    are, since Plotly knows no &quot; and tags need a "<".
    """
    return html.escape(str(text), quote=False)


def choice_labels(dist: CategoricalDistribution) -> list[str]:
    return [label(c) for c in dist.choices]


def figure(*traces: Any, **layout: Any) -> go.Figure:
    fig = go.Figure(data=list(traces))
    fig.update_layout(template=TEMPLATE, **layout)
    return fig


def check_objective(data: TrialData, objective: int) -> int:
    if not 0 <= objective < data.n_objectives:
        raise ChartError(f"objective must be between 0 and {data.n_objectives - 1}")
    return objective
