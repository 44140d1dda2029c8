"""The charts a study page offers (name -> title and builder), and each chart's cached JSON.

Each chart's JSON is cached under the study's trial-count signature, so a page
polling a running study recomputes a chart only when its trials changed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.core.cache import cache

from studies.charts import history, intermediate, multi_objective, params
from studies.charts.base import Chart, ChartError, TrialData
from studies.charts.data import read_curves, trial_data_cache
from studies.models import Study

Options = dict[str, Any]  # from the request: "objective" (an int), "x" and "y" (param names)


@dataclass(frozen=True)
class ChartType:
    title: str
    build: Callable[[Study, TrialData, Options], Chart]
    # None: offered for every study; True: only multi-objective ones; False: only single.
    multi_objective: bool | None = None


def _objective(options: Options) -> int:
    return options.get("objective", 0)


CHARTS: dict[str, ChartType] = {
    "history": ChartType(
        "Optimization history",
        lambda study, data, opts: history.history_chart(data, _objective(opts)),
    ),
    "importances": ChartType(
        "Parameter importances",
        lambda study, data, opts: params.importances_chart(study, data, _objective(opts)),
    ),
    "parallel": ChartType(
        "Parallel coordinate",
        lambda study, data, opts: params.parallel_chart(data, _objective(opts)),
    ),
    "slice": ChartType(
        "Slice",
        lambda study, data, opts: params.slice_chart(data, _objective(opts)),
    ),
    "contour": ChartType(
        "Contour",
        lambda study, data, opts: params.contour_chart(
            data, _objective(opts), opts.get("x"), opts.get("y")
        ),
    ),
    "edf": ChartType(
        "Empirical distribution (EDF)",
        lambda study, data, opts: history.edf_chart(data, _objective(opts)),
    ),
    "intermediate": ChartType(
        "Intermediate values",
        lambda study, data, opts: intermediate.intermediate_chart(data, read_curves(study.pk)),
    ),
    "timeline": ChartType(
        "Timeline",
        lambda study, data, opts: history.timeline_chart(data),
    ),
    "pareto": ChartType(
        "Pareto front",
        lambda study, data, opts: multi_objective.pareto_chart(data),
        multi_objective=True,
    ),
    "hypervolume": ChartType(
        "Hypervolume history",
        lambda study, data, opts: multi_objective.hypervolume_chart(data),
        multi_objective=True,
    ),
}


def charts_for(study: Study) -> list[tuple[str, str]]:
    """(name, title) of the charts shown for ``study``, in page order."""
    multi = study.is_multi_objective
    return [
        (name, chart.title)
        for name, chart in CHARTS.items()
        if chart.multi_objective is None or chart.multi_objective == multi
    ]


def signature(counts: dict[str, int]) -> str:
    """Changes whenever a trial is added or changes state: the charts' cache version."""
    return "-".join(f"{name[0].lower()}{counts.get(name, 0)}" for name in sorted(counts))


def study_signature(study: Study) -> str:
    """``signature`` of the study's trial counts (free when the study was annotated with them)."""
    return signature(study.trial_counts())


def chart_json(study: Study, name: str, options: Options, sig: str | None = None) -> str:
    """The chart's JSON, cached until the study's trials change (``sig``)."""
    if name not in CHARTS:
        raise ChartError(f"unknown chart {name!r}")
    sig = sig or study_signature(study)
    key = f"hub:chart:{study.pk}:{name}:{sig}:" + ",".join(
        f"{k}={options[k]}" for k in sorted(options)
    )
    found = cache.get(key)
    if found is None:
        data = trial_data_cache.get(study, sig)
        found = CHARTS[name].build(study, data, options).to_json()
        cache.set(key, found, timeout=3600)
    return found
