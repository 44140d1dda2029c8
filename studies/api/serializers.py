"""One serializer per resource, and one per request body of the ask/tell actions.

Study validation is studies.config.study.clean_study_config, the same function
the pages use; the fields declared here document the shapes in the OpenAPI
schema. JSON has no inf or nan: objective values, intermediate values and
attributes that are not finite are written as the strings "inf", "-inf" and
"nan", and accepted in that form (or as null, which is how JavaScript's
JSON.stringify writes NaN) wherever a value is read.
"""

from __future__ import annotations

import math
from typing import Any

from drf_spectacular.utils import extend_schema_field
from optuna.trial import TrialState
from rest_framework import serializers

from studies.actions import do_create_study, do_update_study
from studies.config.errors import ConfigError
from studies.config.samplers import PRUNERS, SAMPLERS
from studies.config.study import (
    FIELDS,
    clean_fixed_params,
    clean_search_space,
    clean_study_config,
    clean_user_attrs,
)
from studies.models import Study, Trial, json_safe
from studies.models.team import VISIBILITIES
from studies.teams import clean_placement

# Steps and the like are stored as JSON and compared in Python; this keeps them
# within what every database and client represents exactly.
MAX_INT = 2**63 - 1
NON_FINITE = {"inf": math.inf, "+inf": math.inf, "-inf": -math.inf, "nan": math.nan}
NON_FINITE |= {"infinity": math.inf, "+infinity": math.inf, "-infinity": -math.inf}


PLACEMENT = ("team", "visibility")


def config_error(error: ConfigError) -> serializers.ValidationError:
    detail: dict[str, list[str]] = {}
    for one in error.errors:
        detail.setdefault(one.field, []).append(one.message)
    return serializers.ValidationError(detail)


@extend_schema_field(
    {
        "oneOf": [
            {"type": "number"},
            {"type": "string", "enum": ["inf", "-inf", "nan"]},
        ],
        "description": 'A number; non-finite values are the strings "inf", "-inf", "nan".',
    }
)
class ObjectiveValueField(serializers.Field):
    """A float that may be infinite or NaN: a JSON number or "inf", "-inf", "nan"."""

    default_error_messages = {
        "invalid": 'Must be a number or one of "inf", "-inf", "nan".',
        "overflow": 'Is too large for a float; send "inf" or "-inf".',
    }

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, str) and data.strip().lower() in NON_FINITE:
            return NON_FINITE[data.strip().lower()]
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        try:
            return float(data)
        except OverflowError:
            self.fail("overflow")

    def to_representation(self, value: Any) -> Any:
        return json_safe(value)


class StateField(serializers.ChoiceField):
    """An Optuna trial state by name, in any case."""

    def __init__(self, states: list[TrialState], **kwargs: Any) -> None:
        names = [s.name for s in states]
        super().__init__(choices=names + [n.lower() for n in names], **kwargs)

    def to_internal_value(self, data: Any) -> TrialState:
        if isinstance(data, str) and data.upper() in self.choices:
            return TrialState[data.upper()]
        self.fail("invalid_choice", input=data)

    def to_representation(self, value: Any) -> str:
        return value.name if isinstance(value, TrialState) else str(value)


# Studies


class SamplerSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=list(SAMPLERS), default="tpe")
    options = serializers.DictField(
        required=False, help_text="Keyword arguments of the sampler class."
    )
    seed = serializers.IntegerField(required=False, allow_null=True, min_value=0)


class PrunerSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=list(PRUNERS), default="median")
    options = serializers.DictField(
        required=False, help_text="Keyword arguments of the pruner class."
    )


SEARCH_SPACE_HELP = (
    "Parameters by name, in order: "
    '{"type": "float"|"int", "low", "high", "log"?, "step"?, "when"?} or '
    '{"type": "categorical", "choices": [...], "when"?}; "when" maps earlier parameters '
    "to the values for which this one exists."
)


class TrialSerializer(serializers.Serializer):
    """A trial: external params (as the objective saw them), JSON-safe numbers."""

    trial_id = serializers.IntegerField(read_only=True)
    number = serializers.IntegerField(read_only=True)
    state = serializers.ChoiceField(choices=[s.name for s in TrialState], read_only=True)
    values = serializers.ListField(child=ObjectiveValueField(), allow_null=True, read_only=True)
    params = serializers.DictField(read_only=True, help_text="External values by name.")
    intermediate_values = serializers.DictField(
        child=ObjectiveValueField(), read_only=True, help_text="Values by step."
    )
    datetime_start = serializers.DateTimeField(allow_null=True, read_only=True)
    datetime_complete = serializers.DateTimeField(allow_null=True, read_only=True)
    duration = serializers.FloatField(allow_null=True, read_only=True, help_text="Seconds.")
    user_attrs = serializers.DictField(read_only=True)

    def to_representation(self, trial: Trial) -> dict[str, Any]:
        return {
            "trial_id": trial.pk,
            "number": trial.number,
            "state": trial.state_name,
            "values": json_safe(trial.values),
            "params": json_safe(trial.external_params()),
            "intermediate_values": json_safe(trial.intermediate_values),
            "datetime_start": iso(trial.datetime_start),
            "datetime_complete": iso(trial.datetime_complete),
            "duration": trial.duration,
            "user_attrs": json_safe(trial.user_attrs),
        }


def iso(dt: Any) -> str | None:
    return dt.isoformat() if dt else None


class TrialCountsSerializer(serializers.Serializer):
    RUNNING = serializers.IntegerField()
    WAITING = serializers.IntegerField()
    COMPLETE = serializers.IntegerField()
    PRUNED = serializers.IntegerField()
    FAIL = serializers.IntegerField()


class StudySerializer(serializers.Serializer):
    """A study. Input is validated as a whole by clean_study_config."""

    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(max_length=512)
    directions = serializers.ListField(
        child=serializers.ChoiceField(choices=["minimize", "maximize"]),
        required=False,
        min_length=1,
        help_text='One per objective; default ["minimize"]. Cannot change later.',
    )
    sampler = SamplerSerializer(required=False, help_text="Default: TPE.")
    pruner = PrunerSerializer(required=False, help_text="Default: median.")
    search_space = serializers.DictField(
        child=serializers.DictField(), required=False, help_text=SEARCH_SPACE_HELP
    )
    objective = serializers.CharField(
        required=False, allow_null=True, help_text="A registered objective that jobs run."
    )
    user_attrs = serializers.DictField(required=False)
    team = serializers.IntegerField(
        required=False,
        allow_null=True,
        help_text="The team's id (you must be its editor or admin), or null: yours alone.",
    )
    visibility = serializers.ChoiceField(
        choices=VISIBILITIES,
        required=False,
        help_text="private: the owner or the team's members only; internal: every signed-in "
        "user reads it. Default: HUB_DEFAULT_VISIBILITY.",
    )
    owner = serializers.CharField(read_only=True, allow_null=True, help_text="Username.")
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)
    n_trials = serializers.IntegerField(read_only=True)
    trial_counts = TrialCountsSerializer(read_only=True)

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["Expected a JSON object."]})
        known = set(self.fields)
        unknown = sorted(key for key in data if key not in known)
        if unknown:
            message = f"is not a field of a study (use {', '.join([*FIELDS, *PLACEMENT])})"
            raise serializers.ValidationError({unknown[0]: [message]})
        errors, config, placement = [], {}, {}
        try:
            config = clean_study_config(
                {key: data[key] for key in FIELDS if key in data}, instance=self.instance
            )
        except ConfigError as e:
            errors.append(e)
        try:
            placement = clean_placement(self.context["request"].user, data, self.instance)
        except ConfigError as e:
            errors.append(e)
        if errors:
            raise config_error(ConfigError.combine(errors))
        return {**config, **placement}

    def create(self, validated_data: dict[str, Any]) -> Study:
        return do_create_study(self.context["request"].user, validated_data)

    def update(self, instance: Study, validated_data: dict[str, Any]) -> Study:
        return do_update_study(instance, self.context["request"].user, validated_data)

    def to_representation(self, study: Study) -> dict[str, Any]:
        counts = study.trial_counts()
        return {
            "id": study.pk,
            "name": study.name,
            "directions": study.directions,
            # json_safe: a row stored before non-finite options were refused must
            # not make the study list a 500 for everyone.
            "sampler": json_safe(study.sampler),
            "pruner": json_safe(study.pruner),
            "search_space": json_safe(study.search_space),
            "objective": study.objective or None,
            "user_attrs": json_safe(study.user_attrs),
            "team": study.team_id,
            "visibility": study.visibility,
            "owner": study.owner.get_username() if study.owner else None,
            "created_at": study.created_at.isoformat(),
            "updated_at": study.updated_at.isoformat(),
            "n_trials": sum(counts.values()),
            "trial_counts": counts,
        }


class StudyDetailSerializer(StudySerializer):
    best_trial = TrialSerializer(
        read_only=True, allow_null=True, help_text="Single-objective studies; else null."
    )
    best_trials = TrialSerializer(
        many=True,
        read_only=True,
        help_text="Multi-objective: Optuna's best_trials, the Pareto set; else [best_trial].",
    )

    def to_representation(self, study: Study) -> dict[str, Any]:
        data = super().to_representation(study)
        trial = TrialSerializer()
        best = [trial.to_representation(t) for t in study.best_trials()]
        data["best_trial"] = best[0] if best and not study.is_multi_objective else None
        data["best_trials"] = best
        return data


# Ask / enqueue / suggest / report / tell


@extend_schema_field({"type": "object", "additionalProperties": {"type": "object"}})
class SearchSpaceField(serializers.JSONField):
    """Any JSON here: clean_search_space names what is wrong, down to the parameter."""

    def to_internal_value(self, data: Any) -> Any:
        # JSONField would refuse NaN as "must be valid JSON", naming no parameter.
        return data


class AskSerializer(serializers.Serializer):
    search_space = SearchSpaceField(
        required=False,
        allow_null=True,
        help_text="Sample this space instead of the study's. " + SEARCH_SPACE_HELP,
    )

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        # Here rather than in validate_search_space, so errors name "search_space.<param>".
        if data.get("search_space") is not None:
            try:
                data["search_space"] = clean_search_space(data["search_space"])
            except ConfigError as e:
                raise config_error(e) from None
        return data


class AskResponseSerializer(serializers.Serializer):
    trial_id = serializers.IntegerField()
    number = serializers.IntegerField()
    params = serializers.DictField()


class EnqueueSerializer(serializers.Serializer):
    params = serializers.DictField(help_text="Parameter values the next ask returns.")
    user_attrs = serializers.DictField(required=False)

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        # Here rather than per field, so errors name "params.<name>" and "user_attrs.<key>".
        try:
            data["params"] = clean_fixed_params(data["params"])
            if "user_attrs" in data:
                data["user_attrs"] = clean_user_attrs(data["user_attrs"])
        except ConfigError as e:
            raise config_error(e) from None
        return data


class EnqueueResponseSerializer(serializers.Serializer):
    trial_id = serializers.IntegerField()
    number = serializers.IntegerField()
    state = serializers.CharField()
    params = serializers.DictField()


class SuggestSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    distribution = serializers.DictField(
        help_text='{"type": "float"|"int", "low", "high", "log"?, "step"?} or '
        '{"type": "categorical", "choices": [...]}'
    )

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        name, distribution = data["name"], data["distribution"]
        if "when" in distribution:
            raise serializers.ValidationError(
                {"distribution.when": ["has no meaning here: the client decides what to suggest"]}
            )
        try:
            space = clean_search_space({name: distribution})
        except ConfigError as e:
            field = e.field.replace(f"search_space.{name}", "distribution", 1)
            if not field.startswith("distribution"):
                field = "distribution"
            raise serializers.ValidationError({field: [e.message]}) from None
        data["distribution"] = space[name]
        return data


class SuggestResponseSerializer(serializers.Serializer):
    value = serializers.JSONField(help_text="The parameter's value in this trial.")


class ReportSerializer(serializers.Serializer):
    step = serializers.IntegerField(min_value=0, max_value=MAX_INT)
    value = ObjectiveValueField()


class ReportResponseSerializer(serializers.Serializer):
    should_prune = serializers.BooleanField()


class TellSerializer(serializers.Serializer):
    values = serializers.ListField(
        child=ObjectiveValueField(allow_null=True),
        required=False,
        allow_empty=False,
        help_text="One value per direction. NaN (or null) fails the trial, as Optuna does.",
    )
    state = StateField(
        [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL],
        required=False,
        help_text="complete (with values), pruned or fail (without values); any case.",
    )

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        values, state = data.get("values"), data.get("state")
        n_directions = len(self.context["study"].directions)
        if values is None and state in (None, TrialState.COMPLETE):
            raise serializers.ValidationError(
                {"values": ["is required unless state is pruned or fail"]}
            )
        if values is not None and state in (TrialState.PRUNED, TrialState.FAIL):
            raise serializers.ValidationError(
                {"values": [f"must be absent when state is {state.name.lower()}"]}
            )
        if values is not None and len(values) != n_directions:
            raise serializers.ValidationError(
                {"values": [f"expected {n_directions} (one per direction), got {len(values)}"]}
            )
        return data
