"""What django-axes calls when it throttles failed logins: the client's address and the 429.

django-axes (settings ``AXES_*``) counts failed logins in the database, per
address and per username, for the login page, the admin's and
``POST /api/auth/token/``. This module tells it which address a request comes
from and answers a locked-out request with 429 and ``Retry-After``: JSON under
/api/, the login page with the reason elsewhere.
"""

from __future__ import annotations

import math

from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_cool_off, get_failure_limit
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone


def client_ip(request: HttpRequest) -> str | None:
    """The connecting address; behind the hub's proxy, the address the proxy saw.

    A proxy appends the address it was connected from to X-Forwarded-For, so
    only the last entry is the proxy's word: anything before it the client may
    have written, and trusting it would let one client try passwords under as
    many addresses as it likes.
    """
    if settings.HUB_BEHIND_PROXY:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        last = forwarded.rsplit(",", 1)[-1].strip()
        if last:
            return last
    return request.META.get("REMOTE_ADDR")


def seconds_locked(request: HttpRequest, credentials: dict | None) -> int:
    """Seconds until the request's address and username are both below the failure limit.

    Each attempt row holds the time of its last failure and a count; a lock
    holds while the newest rows that reach the limit are within the cool-off.
    """
    cool_off = get_cool_off(request)
    if cool_off is None:
        return 0
    limit = get_failure_limit(request, credentials)
    now = timezone.now()
    until = now
    handler = AxesProxyHandler.get_implementation()
    for attempts in handler.get_user_attempts(request, credentials):
        total = 0
        rows = attempts.order_by("-attempt_time").values_list(
            "attempt_time", "failures_since_start"
        )
        for attempt_time, failures in rows:
            total += failures
            if total >= limit:
                until = max(until, attempt_time + cool_off)
                break
    return max(1, math.ceil((until - now).total_seconds()))


def lockout_message(seconds: int) -> str:
    minutes = math.ceil(seconds / 60)
    wait = f"{minutes} minute{'s' if minutes != 1 else ''}" if seconds > 90 else f"{seconds} s"
    return f"Too many failed logins from this address or for this username; try again in {wait}."


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None, credentials: dict | None
) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: 429 with Retry-After, in JSON for the API."""
    seconds = seconds_locked(request, credentials)
    message = lockout_message(seconds)
    if request.path.startswith("/api/"):
        response: HttpResponse = JsonResponse(
            {"detail": message, "retry_after": seconds}, status=429
        )
    else:
        username = (credentials or {}).get("username")
        form = AuthenticationForm(request, initial={"username": username})
        response = render(
            request, "registration/login.html", {"form": form, "locked_out": message}, status=429
        )
    response["Retry-After"] = str(seconds)
    return response
