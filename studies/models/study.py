from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from django.conf import settings
from django.db import models
from django.urls import reverse
from optuna.study._multi_objective import _is_pareto_front
from optuna.trial import TrialState

from studies.models.fields import JSONTextField

if TYPE_CHECKING:
    from studies.models.trial import Trial


class StudyQuerySet(models.QuerySet["Study"]):
    def with_trial_counts(self) -> StudyQuerySet:
        """Annotate each study's counts by state, which ``Study.trial_counts`` then reads."""
        counts = {
            f"n_{state.name.lower()}": models.Count("trials", filter=models.Q(trials__state=state))
            for state in TrialState
        }
        return self.annotate(**counts)

    def with_best_values(self) -> StudyQuerySet:
        """Annotate the lowest and highest complete value, which ``Study.best_value`` reads."""
        complete = models.Q(trials__state=TrialState.COMPLETE)
        return self.annotate(
            best_low=models.Min("trials__value", filter=complete),
            best_high=models.Max("trials__value", filter=complete),
        )


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
    sampler = JSONTextField(default=dict, blank=True)
    pruner = JSONTextField(default=dict, blank=True)
    search_space = JSONTextField(default=dict, blank=True)
    objective = models.CharField(max_length=200, blank=True, default="")
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

    def can_edit(self, user: Any) -> bool:
        return Study.owner_rights(user, self.owner_id)

    @staticmethod
    def owner_rights(user: Any, owner_id: int | None) -> bool:
        """Whether ``user`` may change a study ``owner_id`` owns (can_edit without the row)."""
        return bool(user.is_authenticated and (user.is_staff or owner_id == user.pk))

    def trial_counts(self) -> dict[str, int]:
        """Trials per state name, zeros included (from ``with_trial_counts`` when annotated)."""
        if hasattr(self, "n_complete"):
            return {state.name: getattr(self, f"n_{state.name.lower()}") for state in TrialState}
        return self.trials.counts_by_state()

    def best_value(self) -> float | None:
        """The best first value of a single-objective study (from ``with_best_values``)."""
        if self.is_multi_objective or not self.directions:
            return None
        if hasattr(self, "best_low"):
            return self.best_high if self.directions[0] == "maximize" else self.best_low
        return self.trials.best_value(self.directions[0])

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
