"""The run form (starts a job on a study) and cancelling a job."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from studies.actions import do_cancel_job, do_start_job
from studies.api.job_serializers import JobSerializer
from studies.config.errors import ConfigError
from studies.forms import parse_number
from studies.jobs.base import TooManyJobs
from studies.models import Job, Study
from studies.views.common import edit_denied
from studies.views.study_page import study_or_404, study_page_context

RUN_FIELDS = ("n_trials", "timeout", "concurrency", "target", "patience")
# The form's inputs that are stopping rules (stop_when) rather than options.
STOP_FIELDS = ("target", "patience")


def run_options(values: dict[str, str]) -> dict[str, Any]:
    """The form's text as the job's options: numbers parsed, blank fields left out.

    Text that is not a number goes through as it is, for the job's validator
    to report beside its field with every other mistake.
    """
    options: dict[str, Any] = {}
    for key, text in values.items():
        if text:
            try:
                options[key] = parse_number(text)
            except ValueError:
                options[key] = text
    stop_when = {key: options.pop(key) for key in STOP_FIELDS if key in options}
    if stop_when:
        options["stop_when"] = stop_when
    return options


def run_errors(error: ConfigError) -> dict[str, str]:
    """Each mistake by the input it is about; the others together under "other"."""
    errors: dict[str, str] = {}
    other = []
    for one in error.errors:
        field = one.field.removeprefix("stop_when.")
        if field in RUN_FIELDS:
            errors[field] = "; ".join(filter(None, [errors.get(field), one.message]))
        else:
            other.append(f"{one.field}: {one.message}")
    if other:
        errors["other"] = "; ".join(other)
    return errors


@login_required
@require_POST
def study_run(request: HttpRequest, pk: int) -> HttpResponse:
    study = study_or_404(request, pk)
    if denied := edit_denied(request, study):
        return denied
    values = {key: request.POST.get(key, "").strip() for key in RUN_FIELDS}
    try:
        job = do_start_job(study, request.user, **run_options(values))
    except ConfigError as e:
        context = study_page_context(request, study)
        context["run_form"], context["run_errors"] = values, run_errors(e)
        return render(request, "studies/study_detail.html", context, status=400)
    except TooManyJobs as e:
        context = study_page_context(request, study)
        context["run_form"], context["run_errors"] = values, {"other": str(e)}
        return render(request, "studies/study_detail.html", context, status=429)
    messages.success(request, f"Job #{job.pk} started: {job.n_trials} trials.")
    return redirect(reverse("studies:study", args=[study.pk]) + "#jobs")


@login_required
@require_POST
def job_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    readable = Study.objects.readable_by(request.user)
    job = get_object_or_404(
        Job.objects.filter(study__in=readable).select_related("study", "study__owner"), pk=pk
    )
    if denied := edit_denied(request, job.study):
        return denied
    do_cancel_job(job, request.user)
    if request.headers.get("Accept", "").startswith("application/json"):
        return JsonResponse(JobSerializer(job).data)
    messages.info(request, f"Job #{job.pk} is cancelling: running trials finish first.")
    return redirect(reverse("studies:study", args=[job.study_id]) + "#jobs")
