"""One chart of a study as JSON (the study page fetches each), and the compare page."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from studies import charts
from studies.models import Study
from studies.views.assets import plotly_version
from studies.views.studies import study_rows
from studies.views.study_page import study_or_404

COMPARE_CANDIDATES = 200


@login_required
@require_GET
def chart(request: HttpRequest, pk: int, name: str) -> HttpResponse:
    study = study_or_404(request, pk)
    options: dict[str, Any] = {}
    try:
        if request.GET.get("objective"):
            options["objective"] = int(request.GET["objective"])
    except ValueError:
        return JsonResponse({"error": "objective must be a whole number"}, status=400)
    for axis in ("x", "y"):
        if request.GET.get(axis):
            options[axis] = request.GET[axis]
    sig = charts.study_signature(study)
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


@login_required
@require_GET
def compare(request: HttpRequest) -> HttpResponse:
    ids = []
    for raw in request.GET.getlist("ids"):
        try:
            ids.append(int(raw))
        except ValueError:
            continue
    readable = Study.objects.readable_by(request.user)
    chosen = list(readable.filter(pk__in=ids).select_related("owner"))
    chosen.sort(key=lambda s: ids.index(s.pk))
    missing = len(set(ids)) - len(chosen)
    figure = charts.compare_chart(chosen).to_json() if chosen else None
    candidates = readable.order_by("-created_at")[:COMPARE_CANDIDATES]
    return render(
        request,
        "studies/compare.html",
        {
            "chosen": chosen,
            "chosen_ids": {s.pk for s in chosen},
            "rows": study_rows([s.pk for s in chosen]),
            "candidates": candidates,
            "figure": figure,
            "missing": missing,
            "plotly_version": plotly_version(),
        },
    )
