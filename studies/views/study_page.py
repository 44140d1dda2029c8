"""A study's page: summary or Pareto set, jobs, charts, trials table, activity, configuration.

The page polls ``study_status`` and refetches the trials table
(``study_trials``) and the charts only when the trial-count signature changes.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.core.paginator import Paginator
from django.db.models import F
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.template.loader import render_to_string
from django.views.decorators.http import require_GET
from optuna.trial import TrialState

from studies import charts
from studies.api.job_serializers import JobSerializer
from studies.models import AuditEntry, Job, Study
from studies.views.assets import plotly_version
from studies.views.common import objective_labels

TRIALS_PER_PAGE = 50
TABLE_PARAMS = 8  # parameter columns in the trials table; the trial page shows all
PARETO_ROWS = 20
STATE_NAMES = [state.name for state in TrialState]
# The keys of a job's view only its template needs (not JSON, or not meant for it).
TEMPLATE_ONLY = ("segments", "created_at", "best")


def study_or_404(request: HttpRequest, pk: int) -> Study:
    """The study, if the user may read it, or 404 (its counts by state are columns of its row)."""
    readable = Study.objects.readable_by(request.user)
    return get_object_or_404(readable.select_related("owner", "team"), pk=pk)


# The summary


def pareto_set(study: Study, sig: str) -> tuple[list[dict[str, Any]], int]:
    """The first Pareto-optimal trials (by number) and how many there are; cached per signature."""
    key = f"hub:pareto:{study.pk}:{sig}"
    found = cache.get(key)
    if found is None:
        front = study.best_trials()
        rows = [
            {"url": trial.get_absolute_url(), "number": trial.number, "values": trial.values}
            for trial in front[:PARETO_ROWS]
        ]
        found = (rows, len(front))
        cache.set(key, found, timeout=3600)
    return found


def summary_context(study: Study, sig: str) -> dict[str, Any]:
    counts = study.trial_counts()
    context: dict[str, Any] = {
        "study": study,
        "counts": counts,
        "n_trials": sum(counts.values()),
        "states": [(name, counts[name]) for name in STATE_NAMES],
    }
    if study.is_multi_objective:
        context["pareto"], context["n_pareto"] = pareto_set(study, sig)
    else:
        best = study.best_trial()
        context["best"] = best
        if best is not None:
            context["best_params"] = list(best.external_params().items())
    return context


# The trials table


TRIAL_SORTS = {
    "number": ("number",),
    "-number": ("-number",),
    "value": (F("value").asc(nulls_last=True), "number"),
    "-value": (F("value").desc(nulls_last=True), "number"),
    "duration": (F("elapsed").asc(nulls_last=True), "number"),
    "-duration": (F("elapsed").desc(nulls_last=True), "number"),
    "start": (F("datetime_start").asc(nulls_last=True), "number"),
    "-start": (F("datetime_start").desc(nulls_last=True), "number"),
}


def trials_table(request: HttpRequest, study: Study) -> dict[str, Any]:
    sort = request.GET.get("sort", "number")
    if sort not in TRIAL_SORTS:
        sort = "number"
    state = request.GET.get("state", "").upper()
    trials = study.trials.all()
    if state in STATE_NAMES:
        trials = trials.filter(state=TrialState[state])
    else:
        state = ""
    trials = trials.order_by(*TRIAL_SORTS[sort])
    page = Paginator(trials, TRIALS_PER_PAGE).get_page(request.GET.get("page"))
    names = charts.param_names(study)
    columns = names[:TABLE_PARAMS]
    labels = objective_labels(study)
    rows = []
    for trial in page.object_list:
        params = trial.external_params()
        values = list(trial.values or [])
        rows.append(
            {
                "trial": trial,
                # None shows as "—"; "" is a parameter the trial did not have.
                "values": values + [None] * (len(labels) - len(values)),
                "params": [params[n] if n in params else "" for n in columns],
            }
        )

    def link(**changes: Any) -> str:
        current = {"sort": sort, "state": state.lower(), "page": page.number}
        current.update(changes)
        return "?" + urlencode({k: v for k, v in current.items() if v not in ("", None)})

    headers = {}
    for key, label in (("number", "#"), ("value", "Value"), ("duration", "Duration")):
        active = sort.lstrip("-") == key
        descending = sort.startswith("-")
        next_sort = ("-" if active and not descending else "") + key
        arrow = ("▼" if descending else "▲") if active else ""
        headers[key] = {
            "key": key,
            "label": label,
            "url": link(sort=next_sort, page=1),
            "arrow": arrow,
        }
    return {
        "study": study,
        "page": page,
        "rows": rows,
        "columns": columns,
        "hidden_params": len(names) - len(columns),
        "objective_labels": labels,
        "sort": sort,
        "state": state,
        "headers": headers,
        "state_links": [("", "All", link(state="", page=1))]
        + [(name, name.capitalize(), link(state=name.lower(), page=1)) for name in STATE_NAMES],
        "prev_url": link(page=page.previous_page_number()) if page.has_previous() else "",
        "next_url": link(page=page.next_page_number()) if page.has_next() else "",
        "first_url": link(page=1),
        "last_url": link(page=page.paginator.num_pages),
        "query": link().lstrip("?"),
    }


# Jobs


def jobs_context(request: HttpRequest, study: Study) -> dict[str, Any]:
    jobs = study.jobs.select_related("created_by").order_by("-id")[:10]
    return {
        "study": study,
        "jobs": [job_view(job) for job in jobs],
        "can_edit": study.can_edit(request.user),
        "active_statuses": Job.ACTIVE,
    }


def job_view(job: Job) -> dict[str, Any]:
    """The job as the API shows it, plus what its card and progress bar need.

    ``waiting_reason`` (from the API) says why a queued job waits: for a free
    worker, for its user's running-slot limit, or for its delay.
    """
    info = JobSerializer(job).data
    progress = info["progress"]
    total = max(job.n_trials, 1)
    done = progress["complete"] + progress["pruned"] + progress["failed"]
    segments = [
        (state, progress[state], round(100 * progress[state] / total, 2))
        for state in ("complete", "pruned", "failed", "running")
    ]
    best = info["best_value"]  # JSON-safe: "inf" and "nan" as text
    return {
        **info,
        "active": job.is_active,
        "done": done,
        "percent": min(100, int(100 * done / total)),
        "segments": segments,
        "best": float(best) if best is not None else None,
        "user": job.created_by.get_username() if job.created_by else "",
        "created_at": job.created_at,
    }


# The page and its live parts


def study_page_context(request: HttpRequest, study: Study) -> dict[str, Any]:
    """Everything the study page shows; ``study`` comes from ``study_or_404``."""
    sig = charts.study_signature(study)
    jobs = jobs_context(request, study)
    return {
        "active": is_active(study, jobs),
        "study": study,
        "can_edit": study.can_edit(request.user),
        "signature": sig,
        "summary": summary_context(study, sig),
        "table": trials_table(request, study),
        "jobs": jobs,
        "charts": charts.charts_for(study),
        "param_names": charts.param_names(study),
        "objectives": [(i, f"Objective {i + 1} ({d})") for i, d in enumerate(study.directions)],
        "search_space": list(study.search_space.items()),
        "sampler": study.sampler or {},
        "pruner": study.pruner or {},
        "run_form": {"n_trials": 100, "timeout": "", "concurrency": 1},
        "plotly_version": plotly_version(),
        "run_errors": {},
        "activity": list(
            AuditEntry.objects.filter(study_id=study.pk)[: settings.HUB_ACTIVITY_ON_STUDY_PAGE]
        ),
    }


def is_active(study: Study, jobs: dict[str, Any]) -> bool:
    """Whether the page should poll often: a trial or a job is running."""
    return study.trial_counts()["RUNNING"] > 0 or any(job["active"] for job in jobs["jobs"])


@login_required
@require_GET
def study_detail(request: HttpRequest, pk: int) -> HttpResponse:
    study = study_or_404(request, pk)
    return render(request, "studies/study_detail.html", study_page_context(request, study))


@login_required
@require_GET
def study_trials(request: HttpRequest, pk: int) -> HttpResponse:
    """The trials table alone, for the page to refresh it in place."""
    study = get_object_or_404(Study.objects.readable_by(request.user), pk=pk)
    return render(request, "studies/_trials_table.html", {"table": trials_table(request, study)})


@login_required
@require_GET
def study_status(request: HttpRequest, pk: int) -> JsonResponse:
    """What the study page polls: the signature, counts, best trial and jobs."""
    study = study_or_404(request, pk)
    sig = charts.study_signature(study)
    counts = study.trial_counts()
    jobs = jobs_context(request, study)
    summary = summary_context(study, sig)
    return JsonResponse(
        {
            "signature": sig,
            "counts": counts,
            "n_trials": sum(counts.values()),
            "active": is_active(study, jobs),
            "jobs": [
                {k: v for k, v in job.items() if k not in TEMPLATE_ONLY} for job in jobs["jobs"]
            ],
            "jobs_html": render_to_string("studies/_jobs.html", {"jobs": jobs}, request=request),
            "summary_html": render_to_string(
                "studies/_summary.html", {"summary": summary}, request=request
            ),
        }
    )
