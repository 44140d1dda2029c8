"""Request middleware of the hub."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from studies.lockout import client_ip
from studies.models.audit import ADMIN, API, PAGE, REMOTE, audit_context
from studies.ops.logs import current_request_id, log_request, request_id_for
from studies.ops.metrics import observe_request

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


def request_middleware(
    get_response: Callable[[HttpRequest], HttpResponse],
) -> Callable[[HttpRequest], HttpResponse]:
    """Each request gets an id (``X-Request-ID``), a log line and a latency observation.

    First in MIDDLEWARE, so it times everything, static files and redirects included.
    """

    def middleware(request: HttpRequest) -> HttpResponse:
        start = time.perf_counter()
        request_id = request_id_for(request.headers.get("X-Request-ID"))
        request.request_id = request_id  # type: ignore[attr-defined]
        current_request_id.set(request_id)  # until the response is closed (ops.logs)
        response = get_response(request)
        seconds = time.perf_counter() - start
        response["X-Request-ID"] = request_id
        observe_request(request.path_info, response.status_code, seconds)
        user_id = getattr(getattr(request, "user", None), "pk", None)
        log_request(
            request.method or "", request.path, response.status_code, seconds, user_id, request_id
        )
        return response

    return middleware
