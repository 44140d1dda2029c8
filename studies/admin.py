"""The admin for operations. Optuna owns trial data, so trials are read-only here.

Changes made here are audited like those made elsewhere (``via`` "admin"); the
audit trail itself is read-only.
"""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.utils.html import format_html

from studies.actions import do_cancel_job, do_delete_study, do_retry_job
from studies.config.errors import ConfigError
from studies.models import (
    ApiToken,
    AuditEntry,
    CommandObjective,
    Job,
    Membership,
    Study,
    Team,
    Trial,
)
from studies.models.team import ADMIN
from studies.objectives.registry import check_command_objective


@admin.register(Study)
class StudyAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "owner",
        "team",
        "visibility",
        "directions",
        "objective",
        "created_at",
        "page_link",
    )
    list_filter = ("visibility", "objective", "team")
    search_fields = ("name",)
    raw_id_fields = ("owner",)
    list_select_related = ("owner", "team")
    # The configuration is edited where it is validated (the study's page, the
    # API); a plain text box here would store whatever is typed into it.
    readonly_fields = (
        "directions",
        "sampler",
        "pruner",
        "search_space",
        "user_attrs",
        "system_attrs",
        "param_distributions",
    )

    def save_model(self, request, obj: Study, form, change: bool) -> None:
        # Only what the form changed: the trial summary and Optuna's attributes
        # move while trials run, and saving the whole row would put old values back.
        if change:
            obj.save(update_fields=[*form.changed_data, "updated_at"])
            if form.changed_data:
                AuditEntry.record(
                    request.user,
                    AuditEntry.STUDY_EDITED,
                    f"study {obj.name}",
                    study=obj,
                    fields=sorted(form.changed_data),
                )
        else:
            obj.save()
            target = f"study {obj.name}"
            AuditEntry.record(request.user, AuditEntry.STUDY_CREATED, target, study=obj)

    def delete_model(self, request, obj: Study) -> None:
        do_delete_study(obj, request.user)

    def delete_queryset(self, request, queryset) -> None:
        for study in queryset:
            do_delete_study(study, request.user)

    @admin.display(description="page")
    def page_link(self, obj: Study) -> str:
        return format_html('<a href="{}">open</a>', obj.get_absolute_url())


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows to look at: nothing here adds, changes or deletes one."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Trial)
class TrialAdmin(ReadOnlyAdmin):
    """Optuna owns trial data; a trial goes only with its study (its counts stay true)."""

    list_display = ("study", "number", "state", "value", "datetime_start", "heartbeat", "page_link")
    list_filter = ("state",)
    search_fields = ("study__name",)
    list_select_related = ("study",)

    @admin.display(description="page")
    def page_link(self, obj: Trial) -> str:
        return format_html('<a href="{}">open</a>', obj.get_absolute_url())


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "study",
        "objective",
        "mode",
        "status",
        "progress_text",
        "created_at",
        "page_link",
    )
    list_filter = ("status", "mode")
    search_fields = ("study__name", "objective")
    list_select_related = ("study",)
    actions = ["cancel_jobs", "retry_jobs"]
    readonly_fields = [f.name for f in Job._meta.fields] + ["progress_text", "page_link"]

    def has_add_permission(self, request, obj=None) -> bool:
        # Jobs start from the API or the study page, which validate them.
        return False

    @admin.display(description="progress")
    def progress_text(self, obj: Job) -> str:
        p = obj.progress()
        done = p["complete"] + p["pruned"]
        return f"{done}/{p['n_trials']} ({p['running']} running, {p['failed']} failed)"

    @admin.display(description="page")
    def page_link(self, obj: Job) -> str:
        # A job's progress lives on its study's page.
        return format_html('<a href="{}#jobs">open</a>', obj.study.get_absolute_url())

    @admin.action(description="Cancel the selected jobs")
    def cancel_jobs(self, request, queryset) -> None:
        cancelled = sum(do_cancel_job(job, request.user) for job in queryset)
        self.message_user(request, f"Cancelled {cancelled} job(s).", messages.SUCCESS)

    @admin.action(description="Retry the selected failed or cancelled jobs")
    def retry_jobs(self, request, queryset) -> None:
        retried = sum(do_retry_job(job, request.user) for job in queryset)
        skipped = queryset.count() - retried
        self.message_user(request, f"Queued {retried} job(s) again.", messages.SUCCESS)
        if skipped:
            self.message_user(
                request,
                f"Skipped {skipped} job(s): only failed, cancelled or timed-out jobs are retried.",
                messages.WARNING,
            )


class CommandObjectiveForm(forms.ModelForm):
    # Not required here: the hub's validator says what an argv must be.
    argv = forms.JSONField(
        required=False, help_text=CommandObjective._meta.get_field("argv").help_text
    )
    directions = forms.JSONField(initial=["minimize"], help_text='["minimize"] or ["maximize"]')
    search_space = forms.JSONField(
        required=False, initial=dict, help_text="The hub's search-space JSON, as for studies."
    )
    environment = forms.JSONField(
        required=False, initial=dict, help_text="Extra environment variables: {NAME: value}."
    )
    pass_environment = forms.JSONField(
        required=False,
        initial=list,
        help_text=CommandObjective._meta.get_field("pass_environment").help_text,
    )

    class Meta:
        model = CommandObjective
        fields = [
            "name",
            "description",
            "argv",
            "directions",
            "search_space",
            "working_directory",
            "environment",
            "pass_environment",
            "allow_unsafe_strings",
            "timeout",
            "enabled",
        ]

    def clean_argv(self) -> list:
        argv = self.cleaned_data.get("argv")
        return [] if argv is None else argv

    def clean_search_space(self) -> dict:
        return self.cleaned_data.get("search_space") or {}

    def clean_environment(self) -> dict:
        return self.cleaned_data.get("environment") or {}

    def clean_pass_environment(self) -> list:
        names = self.cleaned_data.get("pass_environment")
        return [] if names is None else names

    def _post_clean(self) -> None:
        super()._post_clean()
        if self.errors:
            return
        try:
            check_command_objective(self.instance)
        except ConfigError as e:
            for error in e.errors:
                # "search_space.cfg.choices" goes beside search_space, naming cfg.choices.
                field, _, inner = error.field.partition(".")
                message = f"{inner}: {error.message}" if inner else error.message
                self.add_error(field if field in self.fields else None, message)


@admin.register(CommandObjective)
class CommandObjectiveAdmin(admin.ModelAdmin):
    form = CommandObjectiveForm
    list_display = ("name", "argv", "directions", "timeout", "enabled", "updated_at")
    list_filter = ("enabled",)
    search_fields = ("name", "description")

    def save_model(self, request, obj: CommandObjective, form, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if change and not form.changed_data:
            return
        action = AuditEntry.COMMAND_CHANGED if change else AuditEntry.COMMAND_REGISTERED
        fields = sorted(form.changed_data) if change else []
        AuditEntry.record(
            request.user, action, f"command objective {obj.name}", argv=obj.argv, fields=fields
        )


class MembershipFormSet(forms.BaseInlineFormSet):
    def clean(self) -> None:
        super().clean()
        kept = [
            form.cleaned_data
            for form in self.forms
            if form.cleaned_data and not form.cleaned_data.get("DELETE")
        ]
        if not any(data.get("role") == ADMIN for data in kept):
            raise ValidationError("A team needs at least one admin.")


class MembershipInline(admin.TabularInline):
    model = Membership
    formset = MembershipFormSet
    raw_id_fields = ("user",)
    extra = 1


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ("name", "created_at")
    search_fields = ("name", "memberships__user__username")
    inlines = [MembershipInline]

    def save_model(self, request, obj: Team, form, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if not change:
            AuditEntry.record(request.user, AuditEntry.TEAM_CREATED, f"team {obj}", team_id=obj.pk)

    def save_formset(self, request, form, formset, change: bool) -> None:
        # From the rows: validating the forms already changed their instances.
        before = dict(Membership.objects.filter(team=form.instance).values_list("pk", "role"))
        super().save_formset(request, form, formset, change)
        team = form.instance
        changes = [(AuditEntry.MEMBER_ADDED, m) for m in formset.new_objects]
        changes += [(AuditEntry.ROLE_CHANGED, m) for m, _ in formset.changed_objects]
        changes += [(AuditEntry.MEMBER_REMOVED, m) for m in formset.deleted_objects]
        for action, membership in changes:
            detail = {"member": membership.user.username, "role": membership.role}
            if action == AuditEntry.ROLE_CHANGED:
                detail["before"] = before.get(membership.pk)
            target = f"{membership.user.username} in team {team}"
            AuditEntry.record(request.user, action, target, team_id=team.pk, **detail)


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    """The audit trail, to read."""

    list_display = ("at", "actor_name", "action", "target", "via", "address")
    list_filter = ("action", "via")
    search_fields = ("actor_name", "target")
    date_hierarchy = "at"


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens to see and revoke; the keys are hashes, so none can be shown or made here."""

    list_display = (
        "name",
        "user",
        "prefix",
        "scope",
        "team",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    )
    list_filter = ("revoked_at", "scope")
    search_fields = ("name", "prefix", "user__username")
    readonly_fields = (
        "user",
        "name",
        "prefix",
        "scope",
        "team",
        "created_at",
        "last_used_at",
        "expires_at",
    )
    exclude = ("key_hash",)
    actions = ["revoke"]

    def has_add_permission(self, request) -> bool:
        return False  # a key is shown once, to its user: /tokens/ or manage.py create_token

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request, queryset) -> None:
        for token in queryset.filter(revoked_at=None):
            token.revoke(by=request.user)
        self.message_user(request, "Revoked.", messages.SUCCESS)
