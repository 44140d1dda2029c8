"""Request middleware of the hub."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from studies.lockout import client_ip
from studies.models.audit import ADMIN, API, PAGE, REMOTE, audit_context

# The first matching prefix names the face a request came through.
FACES = (("/api/storage/", REMOTE), ("/api/", API), ("/admin/", ADMIN))


def audit_context_middleware(
    get_response: Callable[[HttpRequest], HttpResponse],
) -> Callable[[HttpRequest], HttpResponse]:
    """Audit entries a request records say which face it came through, and from where."""

    def middleware(request: HttpRequest) -> HttpResponse:
        path = request.path_info
        via = next((face for prefix, face in FACES if path.startswith(prefix)), PAGE)
        with audit_context(via, (client_ip(request) or "")[:45]):
            return get_response(request)

    return middleware
