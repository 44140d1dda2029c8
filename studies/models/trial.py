from __future__ import annotations

from typing import Any

from django.db import models
from django.urls import reverse
from optuna.trial import TrialState

from studies.models.fields import JSONTextField, parse_distribution

# The columns DjangoStorage reads to build an optuna FrozenTrial, in order.
TRIAL_ROW_FIELDS = (
    "id",
    "number",
    "state",
    "values",
    "params",
    "distributions",
    "intermediate_values",
    "user_attrs",
    "system_attrs",
    "datetime_start",
    "datetime_complete",
)


class TrialQuerySet(models.QuerySet["Trial"]):
    def complete(self) -> TrialQuerySet:
        return self.filter(state=TrialState.COMPLETE)

    def counts_by_state(self) -> dict[str, int]:
        """Trials per state name, every state present (zeros included): one grouped query."""
        counts = dict.fromkeys((state.name for state in TrialState), 0)
        for state, n in self.order_by().values_list("state").annotate(n=models.Count("id")):
            counts[TrialState(state).name] = n
        return counts

    def best(self, direction: str) -> Trial | None:
        """The complete trial with the best first value (the earliest of equals)."""
        order = "-value" if direction == "maximize" else "value"
        return self.complete().exclude(value=None).order_by(order, "number").first()

    def best_value(self, direction: str) -> float | None:
        best = models.Max("value") if direction == "maximize" else models.Min("value")
        return self.complete().aggregate(best=best)["best"]


class Trial(models.Model):
    STATE_CHOICES = [(state.value, state.name) for state in TrialState]

    study = models.ForeignKey("Study", on_delete=models.CASCADE, related_name="trials")
    number = models.PositiveIntegerField()
    state = models.PositiveSmallIntegerField(choices=STATE_CHOICES, db_index=True)
    # All objective values (JSON, so inf and nan survive) and the first one as a
    # float column for ordering; None until the trial completes.
    values = JSONTextField(null=True, blank=True)
    value = models.FloatField(null=True, blank=True)
    # Internal representations, as Optuna's storages keep them; the external
    # value is distribution.to_external_repr(internal).
    params = JSONTextField(default=dict)
    distributions = JSONTextField(default=dict)
    intermediate_values = JSONTextField(default=dict)
    user_attrs = JSONTextField(default=dict)
    system_attrs = JSONTextField(default=dict)
    datetime_start = models.DateTimeField(null=True, blank=True)
    datetime_complete = models.DateTimeField(null=True, blank=True)
    heartbeat = models.DateTimeField(null=True, blank=True)
    # Seconds from start to complete, kept by the storage: the trials table sorts by it.
    elapsed = models.FloatField(null=True, blank=True, editable=False)

    objects = TrialQuerySet.as_manager()

    class Meta:
        ordering = ["study_id", "number"]
        constraints = [
            models.UniqueConstraint(fields=["study", "number"], name="unique_trial_number"),
        ]
        indexes = [
            # Counts by state, and the best trial as the first entry of a range.
            models.Index(fields=["study", "state", "value", "number"]),
            models.Index(fields=["study", "elapsed", "number"]),
        ]

    def __str__(self) -> str:
        return f"{self.study.name} #{self.number}"

    def get_absolute_url(self) -> str:
        return reverse("studies:trial", args=[self.pk])

    @property
    def state_name(self) -> str:
        return TrialState(self.state).name

    @property
    def duration(self) -> float | None:
        if self.datetime_start and self.datetime_complete:
            return (self.datetime_complete - self.datetime_start).total_seconds()
        return None

    def external_params(self) -> dict[str, Any]:
        """The parameters as the objective saw them (stored values are Optuna's internal ones)."""
        return {
            name: parse_distribution(self.distributions[name]).to_external_repr(value)
            for name, value in self.params.items()
        }
