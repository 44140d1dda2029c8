"""The API tokens page: create a named token (its key shown once), list and revoke one's own.

A token may be narrowed when made: a ``read`` scope never writes, and a team
limits it to that team's studies.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from studies.client_package import wheel_name
from studies.models import ApiToken
from studies.models.team import SCOPES, WRITE
from studies.models.token import MAX_EXPIRY_DAYS, MAX_NAME_LENGTH, token_limit_error
from studies.teams import teams_of


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
    scope = forms.ChoiceField(
        choices=[(s, s) for s in SCOPES],
        initial=WRITE,
        required=False,  # scripts that post only a name get what they always got
        help_text="read: the token may only read; write: it may do what you may.",
    )
    team = forms.ModelChoiceField(
        queryset=None,
        required=False,
        empty_label="Any of my studies",
        error_messages={"invalid_choice": "is not a team of yours."},
        help_text="Set: the token sees and changes only that team's studies.",
    )

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = teams_of(user)

    def clean_scope(self) -> str:
        return self.cleaned_data["scope"] or WRITE


def hub_url(request: HttpRequest) -> str:
    return request.build_absolute_uri("/").rstrip("/")


@never_cache  # the answer to a POST holds a key
@login_required
@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest) -> HttpResponse:
    form = TokenForm(request.POST if request.method == "POST" else None, user=request.user)
    new_key = None
    if form.is_valid():
        if error := token_limit_error(request.user):
            form.add_error(None, error)
        else:
            data = form.cleaned_data
            _, new_key = ApiToken.issue(
                request.user,
                data["name"],
                data["expires_in_days"],
                scope=data["scope"],
                team=data["team"],
            )
            form = TokenForm(user=request.user)
    tokens = ApiToken.objects.filter(user=request.user).unrevoked().select_related("team")
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
