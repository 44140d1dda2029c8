from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from django.conf import settings
from django.db import models
from django.db.models.functions import Coalesce
from django.urls import reverse
from optuna.study._multi_objective import _is_pareto_front
from optuna.trial import TrialState

from studies.models.fields import JSONTextField
from studies.models.team import INTERNAL, VISIBILITIES, read_rights, readable_filter, write_rights

if TYPE_CHECKING:
    from studies.models.trial import Trial


def default_visibility() -> str:
    return settings.HUB_DEFAULT_VISIBILITY


class StudyQuerySet(models.QuerySet["Study"]):
    def readable_by(self, user: Any) -> StudyQuerySet:
        """The studies ``user`` may read (studies/models/team.py has the rules)."""
        return self.filter(readable_filter(user))

    def recount(self) -> None:
        """Set the trial summary columns from the trials (for rows written around the storage)."""
        for study in self:
            fields = {f"n_{name.lower()}": n for name, n in study.trials.counts_by_state().items()}
            fields["n_trials"] = sum(fields.values())
            if len(study.directions) == 1:
                fields["best_value"] = study.trials.best_value(study.directions[0])
            fields["last_activity"] = study.trials.aggregate(
                last=models.Max(Coalesce("datetime_complete", "datetime_start"))
            )["last"]
            Study.objects.filter(pk=study.pk).update(**fields)


class Study(models.Model):
    name = models.CharField(max_length=512, unique=True)
    # Optuna's direction names, one per objective: ["minimize"] or ["minimize", "maximize"].
    directions = JSONTextField(default=list)
    user_attrs = JSONTextField(default=dict)
    system_attrs = JSONTextField(default=dict)
    # The first distribution seen for each parameter name, to reject an
    # incompatible one later as Optuna's own storages do.
    param_distributions = JSONTextField(default=dict)

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="studies",
    )
    # Null: the owner's own study. Deleting a team is refused while it has studies.
    team = models.ForeignKey(
        "Team", null=True, blank=True, on_delete=models.PROTECT, related_name="studies"
    )
    visibility = models.CharField(
        max_length=10, choices=[(v, v) for v in VISIBILITIES], default=default_visibility
    )
    sampler = JSONTextField(default=dict, blank=True)
    pruner = JSONTextField(default=dict, blank=True)
    search_space = JSONTextField(default=dict, blank=True)
    objective = models.CharField(max_length=200, blank=True, default="")
    # A summary of the trials, kept by DjangoStorage in the transaction that adds
    # a trial or changes its state, so that lists never read the trials: counts
    # by state, the best first value (single objective) and the last change.
    n_trials = models.PositiveIntegerField(default=0, editable=False)
    n_running = models.PositiveIntegerField(default=0, editable=False)
    n_waiting = models.PositiveIntegerField(default=0, editable=False)
    n_complete = models.PositiveIntegerField(default=0, editable=False)
    n_pruned = models.PositiveIntegerField(default=0, editable=False)
    n_fail = models.PositiveIntegerField(default=0, editable=False)
    best_value = models.FloatField(null=True, blank=True, editable=False)
    last_activity = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = StudyQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "studies"
        ordering = ["-id"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("studies:study", args=[self.pk])

    @property
    def is_multi_objective(self) -> bool:
        return len(self.directions) > 1

    def can_read(self, user: Any) -> bool:
        return read_rights(user, self.owner_id, self.team_id, self.visibility)

    def can_edit(self, user: Any) -> bool:
        """Change the study, its trials and its jobs: the owner, the team's editors, staff."""
        return write_rights(user, self.owner_id, self.team_id)

    @property
    def is_internal(self) -> bool:
        return self.visibility == INTERNAL

    def trial_counts(self) -> dict[str, int]:
        """Trials per state name, zeros included."""
        return {state.name: getattr(self, f"n_{state.name.lower()}") for state in TrialState}

    def best_trial(self) -> Trial | None:
        """The best complete trial of a single-objective study, as Optuna's ``best_trial``."""
        if self.is_multi_objective or not self.directions:
            return None
        return self.trials.best(self.directions[0])

    def best_trials(self) -> list[Trial]:
        """Optuna's ``best_trials``: [best_trial], or the Pareto set by number."""
        if not self.is_multi_objective:
            best = self.best_trial()
            return [best] if best is not None else []
        k = len(self.directions)
        rows = [
            (pk, values)
            for pk, values in self.trials.complete().order_by("number").values_list("id", "values")
            if values and len(values) == k
        ]
        if not rows:
            return []
        signs = np.array([-1.0 if d == "maximize" else 1.0 for d in self.directions])
        losses = np.array([values for _, values in rows], float) * signs
        front = [rows[i][0] for i in np.flatnonzero(pareto_mask(losses))]
        found = self.trials.in_bulk(front)
        return [found[pk] for pk in front]


def pareto_mask(losses: np.ndarray) -> np.ndarray:
    """Which rows of ``losses`` (to minimize, one column per objective) are Pareto-optimal."""
    if not len(losses):
        return np.zeros(0, bool)
    return _is_pareto_front(losses, assume_unique_lexsorted=False)
