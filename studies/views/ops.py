"""/healthz, /readyz and /metrics: for load balancers, orchestrators and Prometheus.

No login and nothing secret; GET only (any other method is a 405, CSRF never
applies). /metrics is a 404 to anyone but its scrapers (studies/ops/metrics.py).
"""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from studies.ops.health import readiness
from studies.ops.metrics import may_scrape, render


@csrf_exempt
@never_cache
@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    """The process answers (it checks nothing else: that is /readyz)."""
    return JsonResponse({"status": "ok"})


@csrf_exempt
@never_cache
@require_GET
def readyz(request: HttpRequest) -> HttpResponse:
    """200 when the database, migrations, broker and a worker cluster are all fine, else 503."""
    checks = readiness()
    ready = all(check.ok for check in checks)
    body = {
        "status": "ok" if ready else "unavailable",
        "checks": {check.name: check.to_dict() for check in checks},
    }
    response = JsonResponse(body, status=200 if ready else 503)
    # A 503 here is an answer, not a server error: the request line says it
    # (Django would log an ERROR for each probe of a hub that is not ready).
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response


@csrf_exempt
@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    if not may_scrape(request):
        raise Http404
    return HttpResponse(render(), content_type=CONTENT_TYPE_LATEST)
