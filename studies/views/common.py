"""What several pages share."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.template.loader import render_to_string

from studies.models import Study


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


def objective_labels(study: Study) -> list[str]:
    """The column or row label of each objective value."""
    if len(study.directions) <= 1:
        return ["Value"]
    return [f"Value {i + 1}" for i in range(len(study.directions))]
