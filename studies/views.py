"""The browser pages: server-rendered templates, charts fetched as JSON one by one.

Any signed-in user can look at any study; only its owner (or staff) can change,
run, cancel or delete it (Study.can_edit). Live parts of the study page poll
``study_status``, a small JSON view, and refetch the trials table and charts
only when the trial-count signature changes.
"""

from __future__ import annotations

import gzip
import json
import math
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
import plotly
import plotly.graph_objects as go
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.cache import cache as django_cache
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Count, DurationField, ExpressionWrapper, F, Max, Min, Q
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseForbidden,
    JsonResponse,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from optuna.trial import TrialState

from studies import charts
from studies.forms import (
    PRUNER_HELP,
    SAMPLER_HELP,
    ParamFormSet,
    StudyForm,
    editable_search_space,
    objective_help,
    param_initial,
)
from studies.jobs import start_job
from studies.models import Job, Study, Trial
from studies.search_space import ConfigError
from studies.storage import parse_distribution

STUDIES_PER_PAGE = 25
TRIALS_PER_PAGE = 50
TABLE_PARAMS = 8  # parameter columns in the trials table; the trial page shows all
PARETO_ROWS = 20
STATE_NAMES = [state.name for state in TrialState]


# Formatting


def fmt_value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        return f"{value:.6g}"
    return str(value)


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def external_params(trial: Trial) -> dict[str, Any]:
    return {
        name: parse_distribution(trial.distributions[name]).to_external_repr(value)
        for name, value in trial.params.items()
    }


def describe_spec(spec: dict[str, Any]) -> str:
    if spec["type"] == "categorical":
        return ", ".join(json.dumps(c) if not isinstance(c, str) else c for c in spec["choices"])
    text = f"{fmt_value(spec['low'])} … {fmt_value(spec['high'])}"
    if spec.get("log"):
        text += ", log"
    if spec.get("step") is not None:
        text += f", step {fmt_value(spec['step'])}"
    return text


def describe_when(spec: dict[str, Any]) -> str:
    parts = []
    for parent, allowed in (spec.get("when") or {}).items():
        values = ", ".join(json.dumps(v) if not isinstance(v, str) else v for v in allowed)
        parts.append(f"{parent} ∈ {{{values}}}")
    return " and ".join(parts)


# Permissions


def edit_denied(request: HttpRequest, study: Study) -> HttpResponse | None:
    """The 403 page when the user may not change ``study``, else None."""
    if study.can_edit(request.user):
        return None
    owner = study.owner.get_username() if study.owner else "nobody"
    return HttpResponseForbidden(
        render_to_string(
            "studies/forbidden.html",
            {"study": study, "owner": owner},
            request=request,
        )
    )


# Studies list


SORTS = {
    "-activity": "Last activity",
    "-created": "Newest",
    "name": "Name",
    "-trials": "Most trials",
}


@login_required
@require_GET
def study_list(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "").strip()
    sort = request.GET.get("sort", "-activity")
    if sort not in SORTS:
        sort = "-activity"
    studies = Study.objects.select_related("owner")
    if query:
        studies = studies.filter(Q(name__icontains=query) | Q(owner__username__iexact=query))
    if sort == "-activity":
        studies = studies.annotate(activity=Max("trials__datetime_start")).order_by(
            F("activity").desc(nulls_last=True), "-created_at"
        )
    elif sort == "-trials":
        studies = studies.annotate(n=Count("trials")).order_by("-n", "-created_at")
    elif sort == "name":
        studies = studies.order_by("name")
    else:
        studies = studies.order_by("-created_at")
    page = Paginator(studies, STUDIES_PER_PAGE).get_page(request.GET.get("page"))
    rows = study_rows(list(page.object_list))
    return render(
        request,
        "studies/study_list.html",
        {
            "rows": rows,
            "page": page,
            "query": query,
            "sort": sort,
            "sorts": SORTS,
            "total": Study.objects.count(),
            "page_query": urlencode({"q": query, "sort": sort}),
        },
    )


def study_rows(studies: list[Study]) -> list[dict[str, Any]]:
    """Counts by state, best value, running jobs and last activity for a page of studies."""
    ids = [s.pk for s in studies]
    trials = Trial.objects.filter(study_id__in=ids).order_by()
    counts: dict[int, dict[str, int]] = {pk: dict.fromkeys(STATE_NAMES, 0) for pk in ids}
    for study_id, state, n in trials.values_list("study_id", "state").annotate(n=Count("id")):
        counts[study_id][TrialState(state).name] = n
    best = {
        row["study_id"]: row
        for row in trials.filter(state=TrialState.COMPLETE)
        .values("study_id")
        .annotate(low=Min("value"), high=Max("value"))
    }
    last = {
        row["study_id"]: max(filter(None, [row["start"], row["complete"]]), default=None)
        for row in trials.values("study_id").annotate(
            start=Max("datetime_start"), complete=Max("datetime_complete")
        )
    }
    running_jobs = active_job_counts(ids)
    rows = []
    for study in studies:
        found = best.get(study.pk)
        best_value = None
        if found and not study.is_multi_objective:
            best_value = found["high"] if study.directions[0] == "maximize" else found["low"]
        rows.append(
            {
                "study": study,
                "counts": counts[study.pk],
                "n_trials": sum(counts[study.pk].values()),
                "best": fmt_value(best_value) if found and best_value is not None else None,
                "jobs": running_jobs.get(study.pk, 0),
                "last_activity": last.get(study.pk) or study.updated_at,
            }
        )
    return rows


def active_job_counts(study_ids: list[int]) -> dict[int, int]:
    rows = (
        Job.objects.active()
        .filter(study_id__in=study_ids)
        .order_by()
        .values_list("study_id")
        .annotate(n=Count("id"))
    )
    return dict(rows)


# Creating and editing


def study_form_context(
    form: StudyForm, params: ParamFormSet | None, study: Study | None = None
) -> dict[str, Any]:
    if params is not None:
        # Each row's "only when" menu offers the parameters declared above it.
        names: list[str] = []
        for row in params.forms:
            row.earlier_names = list(names)
            name = (row["name"].value() or "").strip()
            if name:
                names.append(name)
    sampler = form["sampler"].value() or "tpe"
    pruner = form["pruner"].value() or "median"
    return {
        "form": form,
        "params": params,
        "study": study,
        "sampler_help": SAMPLER_HELP,
        "pruner_help": PRUNER_HELP,
        "sampler_hint": "JSON object of keyword arguments. " + SAMPLER_HELP.get(sampler, ""),
        "pruner_hint": "JSON object of keyword arguments. " + PRUNER_HELP.get(pruner, ""),
        "directions": ["minimize", "maximize"],
        "objective_help": (hints := objective_help()),
        "objective_hint": hints.get(form["objective"].value() or "", ""),
    }


def _with_extra_row(data: Any) -> Any:
    data = data.copy()
    data["params-TOTAL_FORMS"] = str(int(data.get("params-TOTAL_FORMS") or 0) + 1)
    return data


@login_required
@require_http_methods(["GET", "POST"])
def study_new(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        form = StudyForm()
        params = ParamFormSet(prefix="params", initial=[{"type": "float"}])
        return render(request, "studies/study_form.html", study_form_context(form, params))
    data = request.POST
    if "add_param" in data:
        # "Add parameter" without JavaScript: show the form again with one more row.
        data = _with_extra_row(data)
        form, params = StudyForm(data), ParamFormSet(data, prefix="params")
        return render(request, "studies/study_form.html", study_form_context(form, params))
    form, params = StudyForm(data), ParamFormSet(data, prefix="params")
    config = form.validate(params)
    if config is None:
        context = study_form_context(form, params)
        return render(request, "studies/study_form.html", context, status=400)
    study = Study.objects.create(owner=request.user, **config)
    messages.success(request, f"Study “{study.name}” created.")
    return redirect(study)


@login_required
@require_http_methods(["GET", "POST"])
def study_edit(request: HttpRequest, pk: int) -> HttpResponse:
    study = get_object_or_404(Study, pk=pk)
    if denied := edit_denied(request, study):
        return denied
    editable = editable_search_space(study)
    if request.method == "GET":
        form = StudyForm(instance=study)
        params = ParamFormSet(prefix="params", initial=param_initial(study)) if editable else None
        return render(request, "studies/study_form.html", study_form_context(form, params, study))
    data = request.POST
    if "add_param" in data and editable:
        data = _with_extra_row(data)
        form, params = StudyForm(data, instance=study), ParamFormSet(data, prefix="params")
        return render(request, "studies/study_form.html", study_form_context(form, params, study))
    form = StudyForm(data, instance=study)
    params = ParamFormSet(data, prefix="params") if editable else None
    config = form.validate(params)
    if config is None:
        context = study_form_context(form, params, study)
        return render(request, "studies/study_form.html", context, status=400)
    with transaction.atomic():
        for key, value in config.items():
            setattr(study, key, value)
        study.save()
    messages.success(request, "Study saved.")
    return redirect(study)


@login_required
@require_http_methods(["GET", "POST"])
def study_delete(request: HttpRequest, pk: int) -> HttpResponse:
    study = get_object_or_404(Study, pk=pk)
    if denied := edit_denied(request, study):
        return denied
    if request.method == "POST":
        cancel_active_jobs(study)
        name = study.name
        study.delete()
        messages.success(request, f"Study “{name}” and its trials were deleted.")
        return redirect("studies:study_list")
    return render(
        request, "studies/study_delete.html", {"study": study, "n_trials": study.trials.count()}
    )


def cancel_active_jobs(study: Study) -> None:
    for job in Job.objects.active().filter(study=study):
        job.cancel()


# The study page


def best_trial(study: Study) -> Trial | None:
    order = "-value" if study.directions and study.directions[0] == "maximize" else "value"
    trials = study.trials.filter(state=TrialState.COMPLETE).exclude(value=None)
    return trials.order_by(order, "number").first()


def pareto_set(study: Study, sig: str) -> tuple[list[dict[str, Any]], int]:
    """The first Pareto-optimal trials (by number) and how many there are; cached per signature."""
    key = f"hub:pareto:{study.pk}:{sig}"
    found = django_cache.get(key)
    if found is None:
        rows = list(
            study.trials.filter(state=TrialState.COMPLETE)
            .order_by("number")
            .values_list("id", "number", "values")
        )
        k = len(study.directions)
        rows = [r for r in rows if r[2] and len(r[2]) == k and all(map(math.isfinite, r[2]))]
        if rows:
            signs = np.array([-1.0 if d == "maximize" else 1.0 for d in study.directions])
            losses = np.array([r[2] for r in rows], float) * signs
            mask = charts.pareto_mask(losses)
            front = [rows[i] for i in np.flatnonzero(mask)]
        else:
            front = []
        found = (
            [
                {
                    "url": reverse("studies:trial", args=[pk]),
                    "number": number,
                    "values": [fmt_value(v) for v in values],
                }
                for pk, number, values in front[:PARETO_ROWS]
            ],
            len(front),
        )
        django_cache.set(key, found, timeout=3600)
    return found


def summary_context(study: Study, counts: dict[str, int], sig: str) -> dict[str, Any]:
    context: dict[str, Any] = {
        "study": study,
        "counts": counts,
        "n_trials": sum(counts.values()),
        "states": [(name, counts[name]) for name in STATE_NAMES],
    }
    if study.is_multi_objective:
        context["pareto"], context["n_pareto"] = pareto_set(study, sig)
    else:
        best = best_trial(study)
        context["best"] = best
        if best is not None:
            context["best_params"] = [
                (name, fmt_value(value)) for name, value in external_params(best).items()
            ]
            context["best_value"] = fmt_value(best.value)
    return context


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
    if "duration" in sort:
        elapsed = ExpressionWrapper(
            F("datetime_complete") - F("datetime_start"), output_field=DurationField()
        )
        trials = trials.annotate(elapsed=elapsed)
    trials = trials.order_by(*TRIAL_SORTS[sort])
    page = Paginator(trials, TRIALS_PER_PAGE).get_page(request.GET.get("page"))
    names = charts.param_names(study)
    columns = names[:TABLE_PARAMS]
    labels = objective_labels(study)
    rows = []
    for trial in page.object_list:
        params = external_params(trial)
        rows.append(
            {
                "trial": trial,
                "values": [fmt_value(v) for v in trial.values or []]
                + ["—"] * (len(labels) - len(trial.values or [])),
                "params": [fmt_value(params[n]) if n in params else "" for n in columns],
                "duration": fmt_duration(trial.duration),
            }
        )

    def link(**changes: Any) -> str:
        current = {"sort": sort, "state": state.lower(), "page": page.number}
        current.update(changes)
        return "?" + urlencode({k: v for k, v in current.items() if v not in ("", None)})

    headers = []
    for key, label in (("number", "#"), ("value", "Value"), ("duration", "Duration")):
        active = sort.lstrip("-") == key
        descending = sort.startswith("-")
        next_sort = ("-" if active and not descending else "") + key
        arrow = ("▼" if descending else "▲") if active else ""
        headers.append(
            {"key": key, "label": label, "url": link(sort=next_sort, page=1), "arrow": arrow}
        )
    return {
        "study": study,
        "page": page,
        "rows": rows,
        "columns": columns,
        "hidden_params": len(names) - len(columns),
        "objective_labels": labels,
        "sort": sort,
        "state": state,
        "headers": {h["key"]: h for h in headers},
        "state_links": [("", "All", link(state="", page=1))]
        + [(name, name.capitalize(), link(state=name.lower(), page=1)) for name in STATE_NAMES],
        "prev_url": link(page=page.previous_page_number()) if page.has_previous() else "",
        "next_url": link(page=page.next_page_number()) if page.has_next() else "",
        "first_url": link(page=1),
        "last_url": link(page=page.paginator.num_pages),
        "query": link().lstrip("?"),
    }


def objective_labels(study: Study) -> list[str]:
    if len(study.directions) <= 1:
        return ["Value"]
    return [f"Value {i + 1}" for i in range(len(study.directions))]


def jobs_context(request: HttpRequest, study: Study) -> dict[str, Any]:
    jobs = list(study.jobs.select_related("created_by").order_by("-id")[:10])
    return {
        "study": study,
        "jobs": [job_view(job) for job in jobs],
        "can_edit": study.can_edit(request.user),
        "active_statuses": Job.ACTIVE,
    }


def job_view(job: Any) -> dict[str, Any]:
    """A job's to_dict() plus what its progress bar needs."""
    info = job.to_dict()
    progress = info["progress"]
    total = max(job.n_trials, 1)
    done = progress["complete"] + progress["pruned"] + progress["failed"]
    segments = [
        (state, progress[state], round(100 * progress[state] / total, 2))
        for state in ("complete", "pruned", "failed", "running")
    ]
    best = info["best_value"]
    return {
        **info,
        "active": job.is_active,
        "done": done,
        "percent": min(100, int(100 * done / total)),
        "segments": segments,
        "best": fmt_value(float(best)) if best is not None else "",
        "user": job.created_by.get_username() if job.created_by else "",
        "created_at": job.created_at,
    }


def study_page_context(request: HttpRequest, study: Study) -> dict[str, Any]:
    counts = charts.trial_counts(study.pk)
    sig = charts.signature(counts)
    jobs = jobs_context(request, study)
    return {
        "active": counts["RUNNING"] > 0 or any(job["active"] for job in jobs["jobs"]),
        "study": study,
        "can_edit": study.can_edit(request.user),
        "signature": sig,
        "summary": summary_context(study, counts, sig),
        "table": trials_table(request, study),
        "jobs": jobs,
        "charts": charts.charts_for(study),
        "param_names": charts.param_names(study),
        "objectives": [(i, f"Objective {i + 1} ({d})") for i, d in enumerate(study.directions)],
        "search_space": [
            {"name": n, "type": s["type"], "range": describe_spec(s), "when": describe_when(s)}
            for n, s in study.search_space.items()
        ],
        "sampler": study.sampler or {},
        "pruner": study.pruner or {},
        "run_form": {"n_trials": 100, "timeout": "", "concurrency": 1},
        "plotly_version": plotly.__version__,
        "run_errors": {},
    }


@login_required
@require_GET
def study_detail(request: HttpRequest, pk: int) -> HttpResponse:
    study = get_object_or_404(Study.objects.select_related("owner"), pk=pk)
    return render(request, "studies/study_detail.html", study_page_context(request, study))


@login_required
@require_GET
def study_trials(request: HttpRequest, pk: int) -> HttpResponse:
    """The trials table alone, for the page to refresh it in place."""
    study = get_object_or_404(Study, pk=pk)
    return render(request, "studies/_trials_table.html", {"table": trials_table(request, study)})


@login_required
@require_GET
def study_status(request: HttpRequest, pk: int) -> JsonResponse:
    """What the study page polls: the signature, counts, best trial and jobs."""
    study = get_object_or_404(Study, pk=pk)
    counts = charts.trial_counts(study.pk)
    sig = charts.signature(counts)
    jobs = jobs_context(request, study)
    summary = summary_context(study, counts, sig)
    active = counts["RUNNING"] > 0 or any(job["active"] for job in jobs["jobs"])
    return JsonResponse(
        {
            "signature": sig,
            "counts": counts,
            "n_trials": sum(counts.values()),
            "active": active,
            "jobs": [
                {k: v for k, v in job.items() if k not in ("segments", "created_at")}
                for job in jobs["jobs"]
            ],
            "jobs_html": render_to_string("studies/_jobs.html", {"jobs": jobs}, request=request),
            "summary_html": render_to_string(
                "studies/_summary.html", {"summary": summary}, request=request
            ),
        }
    )


@login_required
@require_GET
def chart(request: HttpRequest, pk: int, name: str) -> HttpResponse:
    study = get_object_or_404(Study, pk=pk)
    options: dict[str, Any] = {}
    try:
        if request.GET.get("objective"):
            options["objective"] = int(request.GET["objective"])
    except ValueError:
        return JsonResponse({"error": "objective must be a whole number"}, status=400)
    for axis in ("x", "y"):
        if request.GET.get(axis):
            options[axis] = request.GET[axis]
    sig = charts.signature(charts.trial_counts(study.pk))
    try:
        body = charts.chart_json(study, name, options, sig)
    except charts.ChartError as e:
        status = 404 if name not in charts.CHARTS else 400
        return JsonResponse({"error": str(e)}, status=status)
    response = HttpResponse(body, content_type="application/json")
    # The page asks for ?v=<signature>: that URL's content never changes.
    if request.GET.get("v") == sig:
        response["Cache-Control"] = "private, max-age=86400"
    else:
        response["Cache-Control"] = "private, no-cache"
    return response


# Jobs


@login_required
@require_POST
def study_run(request: HttpRequest, pk: int) -> HttpResponse:
    study = get_object_or_404(Study, pk=pk)
    if denied := edit_denied(request, study):
        return denied
    values = {
        key: request.POST.get(key, "").strip() for key in ("n_trials", "timeout", "concurrency")
    }
    errors: dict[str, str] = {}
    parsed: dict[str, Any] = {}
    for key in ("n_trials", "timeout", "concurrency"):
        text = values[key]
        if not text:
            if key == "n_trials":
                errors[key] = "is required"
            continue
        try:
            parsed[key] = float(text) if key == "timeout" else int(text)
        except ValueError:
            errors[key] = f"{text!r} is not a {'number' if key == 'timeout' else 'whole number'}"
    if not errors:
        try:
            job = start_job(study, request.user, **parsed)
        except ConfigError as e:
            if e.field in values:
                errors[e.field] = e.message
            else:
                errors["other"] = f"{e.field}: {e.message}"
        else:
            messages.success(request, f"Job #{job.pk} started: {job.n_trials} trials.")
            return redirect(reverse("studies:study", args=[study.pk]) + "#jobs")
    context = study_page_context(request, study)
    context["run_form"], context["run_errors"] = values, errors
    return render(request, "studies/study_detail.html", context, status=400)


@login_required
@require_POST
def job_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(Job.objects.select_related("study"), pk=pk)
    if denied := edit_denied(request, job.study):
        return denied
    job.cancel()
    if request.headers.get("Accept", "").startswith("application/json"):
        return JsonResponse(job.to_dict())
    messages.info(request, f"Job #{job.pk} is cancelling: running trials finish first.")
    return redirect(reverse("studies:study", args=[job.study_id]) + "#jobs")


# Trials


@login_required
@require_GET
def trial_detail(request: HttpRequest, pk: int) -> HttpResponse:
    trial = get_object_or_404(Trial.objects.select_related("study", "study__owner"), pk=pk)
    study = trial.study
    params = external_params(trial)
    param_rows = []
    for name in charts.param_names(study) + [
        n for n in params if n not in study.param_distributions
    ]:
        if name in params:
            spec = study.search_space.get(name)
            dist = parse_distribution(trial.distributions[name])
            param_rows.append(
                {
                    "name": name,
                    "value": fmt_value(params[name]),
                    "range": describe_spec(spec) if spec else str(dist),
                }
            )
    directions = study.directions or ["minimize"]
    values = [
        (label, direction, fmt_value(v))
        for label, direction, v in zip(
            objective_labels(study), directions, trial.values or [], strict=False
        )
    ]
    siblings = study.trials.order_by("number")
    previous = siblings.filter(number__lt=trial.number).order_by("-number").values("pk").first()
    following = siblings.filter(number__gt=trial.number).values("pk").first()
    output_tail = trial.system_attrs.get("hub_output_tail")
    if isinstance(output_tail, list):
        output_tail = "\n".join(map(str, output_tail))
    context = {
        "trial": trial,
        "study": study,
        "params": param_rows,
        "values": values,
        "duration": fmt_duration(trial.duration),
        "curve": intermediate_figure(trial),
        "user_attrs": attr_rows(trial.user_attrs),
        "system_attrs": attr_rows(
            {k: v for k, v in trial.system_attrs.items() if k != "hub_output_tail"}
        ),
        "output_tail": output_tail,
        "previous_url": reverse("studies:trial", args=[previous["pk"]]) if previous else "",
        "next_url": reverse("studies:trial", args=[following["pk"]]) if following else "",
        "running_for": fmt_duration((timezone.now() - trial.datetime_start).total_seconds())
        if trial.state == TrialState.RUNNING and trial.datetime_start
        else "",
        "plotly_version": plotly.__version__,
    }
    return render(request, "studies/trial_detail.html", context)


def attr_rows(attrs: dict[str, Any]) -> list[tuple[str, str, bool]]:
    rows = []
    for key, value in attrs.items():
        if isinstance(value, str):
            rows.append((key, value, False))
        else:
            text = json.dumps(value, indent=2, default=str, allow_nan=True)
            rows.append((key, text, "\n" in text))
    return rows


def intermediate_figure(trial: Trial) -> str | None:
    if not trial.intermediate_values:
        return None
    steps = sorted(trial.intermediate_values, key=float)
    stride = max(1, math.ceil(len(steps) / 5000))
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


# Comparing studies


@login_required
@require_GET
def compare(request: HttpRequest) -> HttpResponse:
    ids = []
    for raw in request.GET.getlist("ids"):
        try:
            ids.append(int(raw))
        except ValueError:
            continue
    chosen = list(Study.objects.filter(pk__in=ids).select_related("owner"))
    chosen.sort(key=lambda s: ids.index(s.pk))
    missing = len(set(ids)) - len(chosen)
    figure = charts.compare_chart(chosen).to_json() if chosen else None
    candidates = Study.objects.order_by("-created_at")[:200]
    return render(
        request,
        "studies/compare.html",
        {
            "chosen": chosen,
            "chosen_ids": {s.pk for s in chosen},
            "rows": study_rows(chosen),
            "candidates": candidates,
            "figure": figure,
            "missing": missing,
            "plotly_version": plotly.__version__,
        },
    )


# plotly.js, from the installed plotly package


@cache
def plotly_bundle() -> tuple[bytes, bytes]:
    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    raw = path.read_bytes()
    return raw, gzip.compress(raw, compresslevel=6)


def plotly_js(request: HttpRequest, version: str) -> HttpResponse:
    """plotly.js as the plotly package ships it: the pages need no CDN and work offline."""
    if version != plotly.__version__:
        raise Http404("unknown plotly version")
    raw, packed = plotly_bundle()
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        response = HttpResponse(packed, content_type="text/javascript; charset=utf-8")
        response["Content-Encoding"] = "gzip"
    else:
        response = HttpResponse(raw, content_type="text/javascript; charset=utf-8")
    response["Vary"] = "Accept-Encoding"
    # The URL names the version, so the file behind it never changes.
    response["Cache-Control"] = (
        f"public, max-age={int(timedelta(days=365).total_seconds())}, immutable"
    )
    return response
