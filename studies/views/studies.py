"""The studies list, the new-study and edit forms, and deleting a study."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count, F, Q
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from studies.actions import do_create_study, do_delete_study, do_update_study
from studies.config.errors import ConfigError
from studies.forms import (
    PRUNER_HELP,
    SAMPLER_HELP,
    ParamFormSet,
    StudyForm,
    editable_search_space,
    objective_help,
    param_initial,
)
from studies.models import Job, Study
from studies.teams import teams_of
from studies.views.common import edit_denied

STUDIES_PER_PAGE = 25

SORTS = {
    "-activity": "Last activity",
    "-created": "Newest",
    "name": "Name",
    "-trials": "Most trials",
}


# Studies list


@login_required
@require_GET
def study_list(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "").strip()
    sort = request.GET.get("sort", "-activity")
    if sort not in SORTS:
        sort = "-activity"
    studies = Study.objects.readable_by(request.user)
    total = studies.count()
    teams = list(teams_of(request.user))
    team = next((t for t in teams if str(t.pk) == request.GET.get("team")), None)
    if team is not None:
        studies = studies.filter(team=team)
    if query:
        studies = studies.filter(Q(name__icontains=query) | Q(owner__username__iexact=query))
    if sort == "-activity":
        studies = studies.order_by(F("last_activity").desc(nulls_last=True), "-created_at")
    elif sort == "-trials":
        studies = studies.order_by("-n_trials", "-created_at")
    elif sort == "name":
        studies = studies.order_by("name")
    else:
        studies = studies.order_by("-created_at")
    page = Paginator(studies, STUDIES_PER_PAGE).get_page(request.GET.get("page"))
    return render(
        request,
        "studies/study_list.html",
        {
            "rows": study_rows([study.pk for study in page.object_list]),
            "page": page,
            "query": query,
            "sort": sort,
            "sorts": SORTS,
            "total": total,
            "teams": teams,
            "team": team,
            "page_query": urlencode({"q": query, "sort": sort, "team": team.pk if team else ""}),
        },
    )


def study_rows(ids: list[int]) -> list[dict[str, Any]]:
    """Counts by state, best value, running jobs and last activity of these studies, in order.

    The counts, best value and activity are columns of the study row (kept by
    the storage), so this reads no trial: one query for the studies, one for
    their running jobs.
    """
    studies = Study.objects.filter(pk__in=ids).select_related("owner", "team").in_bulk()
    running_jobs = dict(
        Job.objects.active()
        .filter(study_id__in=ids)
        .order_by()
        .values_list("study_id")
        .annotate(n=Count("id"))
    )
    return [
        {
            "study": study,
            "counts": study.trial_counts(),
            "n_trials": study.n_trials,
            "best": study.best_value,
            "jobs": running_jobs.get(study.pk, 0),
            "last_activity": study.last_activity or study.updated_at,
        }
        for study in (studies[pk] for pk in ids if pk in studies)
    ]


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
    hints = objective_help()
    return {
        "form": form,
        "params": params,
        "study": study,
        "sampler_help": SAMPLER_HELP,
        "pruner_help": PRUNER_HELP,
        "sampler_hint": "JSON object of keyword arguments. " + SAMPLER_HELP.get(sampler, ""),
        "pruner_hint": "JSON object of keyword arguments. " + PRUNER_HELP.get(pruner, ""),
        "directions": ["minimize", "maximize"],
        "objective_help": hints,
        "objective_hint": hints.get(form["objective"].value() or "", ""),
    }


def render_form(
    request: HttpRequest,
    form: StudyForm,
    params: ParamFormSet | None,
    study: Study | None = None,
    status: int = 200,
) -> HttpResponse:
    context = study_form_context(form, params, study)
    return render(request, "studies/study_form.html", context, status=status)


def with_extra_row(data: QueryDict) -> QueryDict:
    """The posted form with one more search-space row ("Add parameter" without JavaScript)."""
    data = data.copy()
    data["params-TOTAL_FORMS"] = str(int(data.get("params-TOTAL_FORMS") or 0) + 1)
    return data


@login_required
@require_http_methods(["GET", "POST"])
def study_new(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        params = ParamFormSet(prefix="params", initial=[{"type": "float"}])
        return render_form(request, StudyForm(user=request.user), params)
    data = request.POST
    if "add_param" in data:
        data = with_extra_row(data)
        return render_form(
            request, StudyForm(data, user=request.user), ParamFormSet(data, prefix="params")
        )
    form, params = StudyForm(data, user=request.user), ParamFormSet(data, prefix="params")
    config = form.validate(params)
    if config is not None:
        try:
            study = do_create_study(request.user, config)
        except ConfigError as e:
            form.add_config_error(e, params)
        else:
            messages.success(request, f"Study “{study.name}” created.")
            return redirect(study)
    return render_form(request, form, params, status=400)


@login_required
@require_http_methods(["GET", "POST"])
def study_edit(request: HttpRequest, pk: int) -> HttpResponse:
    study = get_object_or_404(Study.objects.readable_by(request.user), pk=pk)
    if denied := edit_denied(request, study):
        return denied
    editable = editable_search_space(study)
    if request.method == "GET":
        params = ParamFormSet(prefix="params", initial=param_initial(study)) if editable else None
        return render_form(request, StudyForm(instance=study, user=request.user), params, study)
    data = request.POST
    if "add_param" in data and editable:
        data = with_extra_row(data)
        form, params = (
            StudyForm(data, instance=study, user=request.user),
            ParamFormSet(data, prefix="params"),
        )
        return render_form(request, form, params, study)
    form = StudyForm(data, instance=study, user=request.user)
    params = ParamFormSet(data, prefix="params") if editable else None
    config = form.validate(params)
    if config is not None:
        try:
            do_update_study(study, request.user, config)
        except ConfigError as e:
            study.refresh_from_db()  # the page shows the study as it is saved
            form.add_config_error(e, params)
        else:
            messages.success(request, "Study saved.")
            return redirect(study)
    return render_form(request, form, params, study, status=400)


@login_required
@require_http_methods(["GET", "POST"])
def study_delete(request: HttpRequest, pk: int) -> HttpResponse:
    study = get_object_or_404(Study.objects.readable_by(request.user), pk=pk)
    if denied := edit_denied(request, study):
        return denied
    if request.method == "POST":
        name = study.name
        do_delete_study(study, request.user)
        messages.success(request, f"Study “{name}” and its trials were deleted.")
        return redirect("studies:study_list")
    return render(
        request, "studies/study_delete.html", {"study": study, "n_trials": study.trials.count()}
    )
