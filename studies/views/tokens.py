"""The API tokens page: create a named token (its key shown once), list and revoke one's own."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from studies.client_package import wheel_name
from studies.models import ApiToken
from studies.models.token import MAX_EXPIRY_DAYS, MAX_NAME_LENGTH, token_limit_error


class TokenForm(forms.Form):
    name = forms.CharField(
        max_length=MAX_NAME_LENGTH,
        help_text="What uses it, e.g. “laptop” or “CI”.",
    )
    expires_in_days = forms.IntegerField(
        label="Expires after (days)",
        min_value=1,
        max_value=MAX_EXPIRY_DAYS,
        required=False,
        help_text="Empty: until revoked.",
    )


def hub_url(request: HttpRequest) -> str:
    return request.build_absolute_uri("/").rstrip("/")


@never_cache  # the answer to a POST holds a key
@login_required
@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest) -> HttpResponse:
    form = TokenForm(request.POST if request.method == "POST" else None)
    new_key = None
    if form.is_valid():
        if error := token_limit_error(request.user):
            form.add_error(None, error)
        else:
            _, new_key = ApiToken.issue(
                request.user, form.cleaned_data["name"], form.cleaned_data["expires_in_days"]
            )
            form = TokenForm()
    tokens = ApiToken.objects.filter(user=request.user).unrevoked()
    return render(
        request,
        "studies/tokens.html",
        {
            "form": form,
            "tokens": tokens,
            "new_key": new_key,
            "hub_url": hub_url(request),
            "client_wheel": wheel_name(),
        },
        status=400 if form.errors else 200,
    )


@login_required
@require_POST
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    # Only one's own tokens: another user's is a 404, like a missing one.
    token = get_object_or_404(ApiToken.objects.filter(user=request.user).unrevoked(), pk=pk)
    token.revoke()
    messages.success(request, f"Revoked “{token.name}” ({token.prefix}…); it no longer works.")
    return redirect("studies:tokens")
