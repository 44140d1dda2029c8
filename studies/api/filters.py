from typing import Any

import django_filters
from django.db.models import DurationField, ExpressionWrapper, F, QuerySet
from optuna.trial import TrialState
from rest_framework.exceptions import ValidationError
from rest_framework.filters import OrderingFilter
from rest_framework.request import Request

from studies.models import Trial


class TrialFilter(django_filters.FilterSet):
    state = django_filters.CharFilter(
        method="filter_state",
        help_text="Trial states, comma-separated, any case: complete,pruned,fail,running,waiting.",
    )

    class Meta:
        model = Trial
        fields = ["state"]

    def filter_state(self, queryset: QuerySet[Trial], name: str, value: str) -> QuerySet[Trial]:
        states = []
        for word in value.split(","):
            try:
                states.append(TrialState[word.strip().upper()])
            except KeyError:
                names = ", ".join(s.name for s in TrialState)
                raise ValidationError({"state": [f"{word!r} is not a state ({names})"]}) from None
        return queryset.filter(state__in=states)


class TrialOrdering(OrderingFilter):
    """Order by number, value or duration; trials without one come last either way."""

    columns = {"number": "number", "value": "value", "duration": "run_time"}

    def get_valid_fields(self, queryset: Any, view: Any, context: Any = None) -> list:
        return [(name, name) for name in self.columns]

    def filter_queryset(self, request: Request, queryset: QuerySet, view: Any) -> QuerySet:
        ordering = self.get_ordering(request, queryset, view)
        if not ordering:
            return queryset
        # Trial.duration is a property, so the annotation takes another name.
        queryset = queryset.annotate(
            run_time=ExpressionWrapper(
                F("datetime_complete") - F("datetime_start"), output_field=DurationField()
            )
        )
        terms = []
        for term in ordering:
            column = F(self.columns[term.lstrip("-")])
            if term.startswith("-"):
                terms.append(column.desc(nulls_last=True))
            else:
                terms.append(column.asc(nulls_last=True))
        return queryset.order_by(*terms, "number")
