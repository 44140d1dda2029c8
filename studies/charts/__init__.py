"""Plotly figures for the study pages, bounded for large studies, shipped as JSON.

Every chart is built in Python, one request per chart. The browser never
receives more than a bounded number of points: beyond a limit a chart samples,
bins or aggregates, and its ``note`` says so on the chart.
``optuna.visualization`` is the reference for what each chart shows, not the
implementation: its contour plot alone emits 1.2 GB of JSON at 10 000 trials.

- ``base.py``: trials as NumPy columns (``TrialData``), deterministic sampling,
  the look (template, colours, ``figure``), ``Chart``;
- ``data.py``: reading those columns from the trial rows, and their per-process
  cache (``trial_data_cache``), refreshed with only new and unfinished trials;
- ``limits.py``: how many points, lines or bins each chart may send;
- ``registry.py``: ``CHARTS`` (name -> title and builder), ``charts_for``, the
  trial-count ``signature`` and ``chart_json``, each chart's JSON cached under it;
- ``history.py``: optimization history, EDF, timeline;
- ``params.py``: importances, parallel coordinate, slice, contour;
- ``intermediate.py``: intermediate values;
- ``multi_objective.py``: Pareto front, hypervolume history;
- ``compare.py``: several studies' best values overlaid (the compare page).
"""

from studies.charts.base import (
    STATE_COLORS,
    Chart,
    ChartError,
    figure,
    param_names,
    sample,
)
from studies.charts.compare import compare_chart
from studies.charts.data import TrialDataCache, trial_data_cache
from studies.charts.registry import CHARTS, chart_json, charts_for, signature, study_signature

__all__ = [
    "CHARTS",
    "STATE_COLORS",
    "Chart",
    "TrialDataCache",
    "ChartError",
    "chart_json",
    "charts_for",
    "compare_chart",
    "figure",
    "param_names",
    "sample",
    "signature",
    "study_signature",
    "trial_data_cache",
]
