"""Files the hub serves besides pages: plotly.js (no CDN, works offline) and the client wheel."""

from __future__ import annotations

import gzip
from datetime import timedelta
from functools import cache
from pathlib import Path

import plotly
from django.http import Http404, HttpRequest, HttpResponse

from studies.client_package import build_wheel, wheel_name


@cache
def plotly_bundle() -> tuple[bytes, bytes]:
    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    raw = path.read_bytes()
    return raw, gzip.compress(raw, compresslevel=6)


def plotly_js(request: HttpRequest, version: str) -> HttpResponse:
    """plotly.js as the plotly package ships it, gzipped when the browser takes it."""
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


def client_wheel(request: HttpRequest, filename: str) -> HttpResponse:
    """optuna-hub-client as a wheel, for ``pip install <hub>/client/<wheel>`` (no login:
    the package holds nothing of the hub's)."""
    if filename != wheel_name():
        raise Http404(f"this hub serves {wheel_name()}")
    response = HttpResponse(build_wheel(), content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
