"""Files the hub serves besides pages: plotly.js (no CDN, works offline) and the client wheel."""

from __future__ import annotations

import gzip
import hashlib
from datetime import timedelta
from functools import cache
from pathlib import Path

from django.http import Http404, HttpRequest, HttpResponse

from studies.client_package import build_wheel, wheel_name

# plotly.js with only the trace types the charts draw (a third of the full
# bundle's size, so the first chart shows sooner); studies/vendor/plotly/build.sh
# rebuilds it from the plotly.js version the plotly package writes figures for.
PLOTLY_BUNDLE = Path(__file__).resolve().parent.parent / "vendor" / "plotly-hub.min.js"


@cache
def plotly_bundle() -> tuple[str, bytes]:
    """(version, file): the version is a digest of the file."""
    raw = PLOTLY_BUNDLE.read_bytes()
    return hashlib.sha256(raw).hexdigest()[:12], raw


@cache
def plotly_bundle_gzipped() -> bytes:
    return gzip.compress(plotly_bundle()[1], compresslevel=6)


def plotly_version() -> str:
    """What the pages put in plotly.js's URL: a new bundle gets a new URL."""
    return plotly_bundle()[0]


def plotly_js(request: HttpRequest, version: str) -> HttpResponse:
    """The hub's plotly.js bundle, gzipped when the browser takes it."""
    current, raw = plotly_bundle()
    if version != current:
        raise Http404("unknown plotly.js bundle")
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        packed = plotly_bundle_gzipped()
        response = HttpResponse(packed, content_type="text/javascript; charset=utf-8")
        response["Content-Encoding"] = "gzip"
    else:
        response = HttpResponse(raw, content_type="text/javascript; charset=utf-8")
    response["Vary"] = "Accept-Encoding"
    # The URL names the file's digest, so the file behind it never changes.
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
