"""The new-study form and its search-space editor.

The form only parses what a person typed (numbers, JSON options, lists of
choices) into the JSON a client would post; studies.config.study validates it,
exactly as for the API. Each ConfigError names a field such as
"search_space.lr.low" or "sampler.options.n_startup_trials", and
``StudyForm.add_config_error`` puts its message beside that field or row.
"""

from __future__ import annotations

import json
import math
from typing import Any

from django import forms
from django.conf import settings
from django.db.models import Q
from django.forms import formset_factory

from studies.config.errors import ConfigError
from studies.config.samplers import DEFAULT_PRUNER, DEFAULT_SAMPLER, PRUNERS, SAMPLERS, json_options
from studies.config.study import (
    clean_directions,
    clean_name,
    clean_study_config,
)
from studies.models import Study, Team
from studies.models.team import INTERNAL, PRIVATE, WRITERS
from studies.objectives.registry import get_objectives
from studies.teams import clean_placement, teams_of

PARAM_TYPES = [("float", "float"), ("int", "int"), ("categorical", "categorical")]


def parse_number(text: str) -> int | float:
    """``"5"`` -> 5, ``"1e-4"`` -> 0.0001; ValueError for anything else."""
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        number = float(text)
    if not math.isfinite(number):
        raise ValueError(text)
    return number


def parse_scalar(text: str) -> Any:
    """One choice as typed: numbers become numbers, true/false/null their JSON values."""
    text = text.strip()
    if text in ("true", "false", "null"):
        return json.loads(text)
    try:
        return parse_number(text)
    except ValueError:
        return text


def load_json(text: str) -> Any:
    """json.loads, with a form error for text too deeply nested to parse at all.

    Shallower nesting beyond HUB_MAX_JSON_DEPTH parses, and clean_study_config
    refuses it naming the field, as for the API.
    """
    try:
        return json.loads(text)
    except RecursionError:
        raise forms.ValidationError("is nested too deeply") from None


def parse_list(text: str) -> list[Any]:
    """Comma-separated choices, or a JSON list when the exact types matter."""
    text = text.strip()
    if text.startswith("["):
        try:
            value = load_json(text)
        except ValueError as e:
            raise forms.ValidationError(f"is not a valid JSON list ({e.msg})") from None
        if not isinstance(value, list):
            raise forms.ValidationError("must be a JSON list")
        return value
    return [parse_scalar(part) for part in text.split(",") if part.strip()]


def format_list(values: list[Any]) -> str:
    """The inverse of parse_list, for editing an existing study."""
    if all(
        (isinstance(v, str) and v.strip() == v and "," not in v and parse_scalar(v) == v)
        or (isinstance(v, int | float | bool) or v is None)
        for v in values
    ):
        return ", ".join(json.dumps(v) if not isinstance(v, str) else v for v in values)
    return json.dumps(values)


def option_help(classes: dict[str, type]) -> dict[str, str]:
    """The keyword options each sampler or pruner accepts, for the hint under the field."""
    names = {int: "integer", float: "number", bool: "true/false", str: "string"}
    names |= {dict: "object", list: "list", type(None): "null"}
    hints = {}
    for key, cls in classes.items():
        options = json_options(cls)
        parts = [
            f"{name} ({' or '.join(dict.fromkeys(names[t] for t in types if t is not type(None)))})"
            for name, types in options.items()
        ]
        hints[key] = f"{cls.__name__}: " + (", ".join(parts) if parts else "no options")
    return hints


SAMPLER_HELP = option_help(SAMPLERS)
PRUNER_HELP = option_help(PRUNERS)


class JSONObjectField(forms.CharField):
    """A JSON object typed into a textarea; blank means {}."""

    widget = forms.Textarea(attrs={"rows": 2, "spellcheck": "false", "class": "mono"})

    def to_python(self, value: Any) -> dict[str, Any]:
        text = (value or "").strip()
        if not text:
            return {}
        try:
            parsed = load_json(text)
        except ValueError as e:
            raise forms.ValidationError(f"is not valid JSON ({e.msg}, line {e.lineno})") from None
        if not isinstance(parsed, dict):
            raise forms.ValidationError('must be a JSON object, like {"n_startup_trials": 20}')
        return parsed


OBJECTIVE_GROUPS = {
    "builtin": "Benchmark functions",
    "sklearn": "scikit-learn models",
    "project": "This project's objectives",
    "command": "Commands (registered by staff)",
}


def objective_choices() -> list[Any]:
    """Registered objectives grouped by kind, after the "none" choice."""

    groups: dict[str, list[tuple[str, str]]] = {}
    for name, info in get_objectives().items():
        groups.setdefault(info.kind, []).append((name, name))
    choices: list[Any] = [("", "None: trials come from an API client (ask / tell)")]
    for kind, members in groups.items():
        choices.append((OBJECTIVE_GROUPS.get(kind, kind), members))
    return choices


def objective_help() -> dict[str, str]:
    """What each objective does, shown under the menu when it is chosen."""

    hints = {"": "Your code asks the hub for parameters and tells it the values."}
    for name, info in get_objectives().items():
        params = ", ".join(info.search_space) or "declared by the study"
        hints[name] = (
            f"{info.description} Returns {len(info.directions)} value"
            f"{'s' if len(info.directions) > 1 else ''} ({', '.join(info.directions)}); "
            f"parameters when the study declares none: {params}."
        )
    return hints


class ListField(forms.Field):
    """Every value posted under the field's name, in order (repeated <select>s)."""

    widget = forms.MultipleHiddenInput

    def to_python(self, value: Any) -> list[str]:
        return [str(v) for v in value or [] if str(v).strip()]


def select(choices: list[tuple[str, str]]) -> forms.CharField:
    # A plain CharField: an unknown value reaches clean_study_config, which
    # explains it the same way the API does.
    return forms.CharField(required=False, widget=forms.Select(choices=choices))


class StudyForm(forms.Form):
    name = forms.CharField(required=False)
    directions = ListField(required=False)
    objective = select([])
    sampler = select([(k, c.__name__) for k, c in SAMPLERS.items()])
    sampler_seed = forms.CharField(required=False, label="Seed")
    sampler_options = JSONObjectField(required=False, label="Sampler options")
    pruner = select([(k, c.__name__) for k, c in PRUNERS.items()])
    pruner_options = JSONObjectField(required=False, label="Pruner options")
    team = select([])
    visibility = select(
        [
            (INTERNAL, "Internal: every signed-in user reads it"),
            (PRIVATE, "Private: only its owner or its team's members"),
        ]
    )

    def __init__(self, *args: Any, user: Any, instance: Study | None = None, **kwargs: Any) -> None:
        self.instance, self.user = instance, user
        if instance is not None and not args and "data" not in kwargs:
            kwargs["initial"] = initial_for(instance)
        else:
            kwargs.setdefault(
                "initial",
                {
                    "directions": ["minimize"],
                    "sampler": DEFAULT_SAMPLER["type"],
                    "pruner": DEFAULT_PRUNER["type"],
                    "visibility": settings.HUB_DEFAULT_VISIBILITY,
                },
            )
        super().__init__(*args, **kwargs)
        self.fields["objective"].widget.choices = objective_choices()
        self.fields["team"].widget.choices = team_choices(user, instance)
        if instance is not None:
            self.fields["directions"].disabled = True
        self.config: dict[str, Any] | None = None

    @property
    def direction_values(self) -> list[str]:
        value = self["directions"].value() or ["minimize"]
        return list(value)

    def clean_sampler_seed(self) -> int | None:
        text = self.cleaned_data["sampler_seed"].strip()
        if not text:
            return None
        try:
            return int(text)
        except ValueError:
            raise forms.ValidationError(
                "must be a whole number, or blank for a random seed"
            ) from None

    def add_config_error(self, error: ConfigError, params: ParamFormSet | None) -> None:
        for one in error.errors:
            self._place_error(one.field, one.message, params)

    def _place_error(self, field: str, message: str, params: ParamFormSet | None) -> None:
        top = {
            "name": "name",
            "directions": "directions",
            "objective": "objective",
            "team": "team",
            "visibility": "visibility",
        }
        head = field.split(".", 1)[0]
        if head in top:
            self.add_error(top[head], message)
        elif head in ("sampler", "pruner"):
            rest = field.split(".")[1:]
            if rest[:1] == ["options"]:
                option = ".".join(rest[1:])
                self.add_error(f"{head}_options", f"{option}: {message}" if option else message)
            elif rest[:1] == ["seed"]:
                self.add_error("sampler_seed", message)
            else:
                self.add_error(head, message)
        elif head == "search_space" and params is not None:
            params.add_config_error(field, message)
        else:
            self.add_error(None, f"{field}: {message}")

    def validate(self, params: ParamFormSet | None) -> dict[str, Any] | None:
        """The study's normalized configuration, or None with every error placed.

        ``params`` is None when the search space is not edited here (it keeps
        the instance's value).
        """
        form_valid = self.is_valid()
        params_valid = params is None or params.is_valid()
        if form_valid and not params_valid:
            # The editor's rows have mistakes of their own: report name and direction
            # mistakes with them rather than on the next submit.
            checks = [lambda: clean_name(self.cleaned_data["name"], self.instance)]
            if self.instance is None:
                checks.append(lambda: clean_directions(self.directions_input()))
            for check in checks:
                try:
                    check()
                except ConfigError as e:
                    self.add_config_error(e, params)
        if not (form_valid and params_valid):
            return None
        data = self.cleaned_data
        config_input: dict[str, Any] = {
            "name": data["name"],
            "sampler": {
                "type": data["sampler"],
                "options": data["sampler_options"],
                "seed": data["sampler_seed"],
            },
            "pruner": {"type": data["pruner"], "options": data["pruner_options"]},
            "objective": data["objective"],
        }
        if params is not None:
            config_input["search_space"] = params.search_space()
        if self.instance is None:
            config_input["directions"] = self.directions_input()
        errors = []
        try:
            self.config = clean_study_config(config_input, instance=self.instance)
        except ConfigError as e:
            errors.append(e)
        # A field the form did not send keeps the study's value (or the default).
        placement: dict[str, Any] = {}
        if "team" in self.data:
            placement["team"] = int(data["team"]) if data["team"].isdigit() else None
        if data["visibility"]:
            placement["visibility"] = data["visibility"]
        try:
            place = clean_placement(self.user, placement, self.instance)
        except ConfigError as e:
            errors.append(e)
        if errors:
            # Every field's mistakes at once.
            self.add_config_error(ConfigError.combine(errors), params)
            return None
        self.config = {**(self.config or {}), **place}
        return self.config

    def directions_input(self) -> list[str]:
        return self.cleaned_data["directions"] or ["minimize"]


def initial_for(study: Study) -> dict[str, Any]:
    sampler = study.sampler or DEFAULT_SAMPLER
    pruner = study.pruner or DEFAULT_PRUNER
    return {
        "name": study.name,
        "directions": list(study.directions),
        "objective": study.objective,
        "sampler": sampler.get("type", "tpe"),
        "sampler_seed": "" if sampler.get("seed") is None else str(sampler["seed"]),
        "sampler_options": json.dumps(sampler.get("options") or {})
        if sampler.get("options")
        else "",
        "pruner": pruner.get("type", "median"),
        "pruner_options": json.dumps(pruner.get("options") or {}) if pruner.get("options") else "",
        "team": str(study.team_id or ""),
        "visibility": study.visibility,
    }


def team_choices(user: Any, instance: Study | None) -> list[tuple[str, str]]:
    """Where a study may be: the user's own, or a team they edit in (and where it is now)."""
    choices = [("", "Just me (no team)")]
    teams = teams_of(user)
    if not user.is_staff:
        teams = teams.filter(memberships__user_id=user.pk, memberships__role__in=WRITERS)
    ids = {instance.team_id} if instance is not None and instance.team_id else set()
    for team in Team.objects.filter(Q(pk__in=teams.values("pk")) | Q(pk__in=ids)):
        choices.append((str(team.pk), f"Team {team.name}"))
    return choices


class ParamForm(forms.Form):
    """One row of the search-space editor."""

    name = forms.CharField(required=False, max_length=200)
    type = forms.ChoiceField(choices=PARAM_TYPES, initial="float")
    low = forms.CharField(required=False)
    high = forms.CharField(required=False)
    step = forms.CharField(required=False)
    log = forms.BooleanField(required=False)
    choices = forms.CharField(required=False)
    when_param = forms.CharField(required=False, label="Only when")
    when_values = forms.CharField(required=False, label="is one of")

    def is_blank(self) -> bool:
        data = self.cleaned_data
        keys = ("name", "low", "high", "step", "choices", "when_param", "when_values")
        return not any(data.get(key, "").strip() for key in keys)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if self.is_blank() or data.get("DELETE"):
            return data
        if not data.get("name", "").strip():
            self.add_error("name", "is required")
        if data.get("type") in ("float", "int"):
            for key in ("low", "high", "step"):
                text = data.get(key, "").strip()
                if not text:
                    if key != "step":
                        self.add_error(key, "is required")
                    continue
                try:
                    parse_number(text)
                except ValueError:
                    self.add_error(key, f"{text!r} is not a number")
        elif data.get("type") == "categorical":
            try:
                data["parsed_choices"] = parse_list(data.get("choices", ""))
            except forms.ValidationError as e:
                self.add_error("choices", e)
            else:
                if not data["parsed_choices"]:
                    self.add_error("choices", "list at least one choice, separated by commas")
        if data.get("when_param", "").strip():
            try:
                values = parse_list(data.get("when_values", ""))
            except forms.ValidationError as e:
                self.add_error("when_values", e)
            else:
                if not values:
                    self.add_error("when_values", "list the values that switch this parameter on")
                data["parsed_when"] = values
        elif data.get("when_values", "").strip():
            self.add_error("when_param", "choose the earlier parameter this depends on")
        return data

    def spec(self) -> dict[str, Any]:
        data = self.cleaned_data
        spec: dict[str, Any] = {"type": data["type"]}
        if data["type"] == "categorical":
            spec["choices"] = data["parsed_choices"]
        else:
            spec["low"] = parse_number(data["low"])
            spec["high"] = parse_number(data["high"])
            if data["step"].strip():
                spec["step"] = parse_number(data["step"])
            if data["log"]:
                spec["log"] = True
        if data["when_param"].strip():
            spec["when"] = {data["when_param"].strip(): data["parsed_when"]}
        return spec


class BaseParamFormSet(forms.BaseFormSet):
    has_config_errors = False

    def rows(self) -> list[ParamForm]:
        """The filled-in rows, in order (blank and removed rows are skipped)."""
        return [
            form
            for form in self.forms
            if form.is_valid() and not form.cleaned_data.get("DELETE") and not form.is_blank()
        ]

    def clean(self) -> None:
        seen: set[str] = set()
        for form in self.forms:
            if not form.is_valid() or form.cleaned_data.get("DELETE") or form.is_blank():
                continue
            name = form.cleaned_data["name"].strip()
            if name in seen:
                form.add_error("name", f"{name!r} is already a parameter above")
            seen.add(name)

    def search_space(self) -> dict[str, Any]:
        return {form.cleaned_data["name"].strip(): form.spec() for form in self.rows()}

    def add_config_error(self, field: str, message: str) -> None:
        """Place a "search_space.<name>.<key>" error on that row's input."""
        self.has_config_errors = True
        rows = self.rows()
        # Parameter names may contain dots: match the longest name that fits.
        for form in sorted(rows, key=lambda f: -len(f.cleaned_data["name"])):
            name = form.cleaned_data["name"].strip()
            prefix = f"search_space.{name}"
            if field == prefix or field.startswith(prefix + "."):
                key = field[len(prefix) + 1 :].split(".", 1)[0]
                if key == "when":
                    target = "when_param" if "declared before" in message else "when_values"
                elif key in ("low", "high", "step", "log", "choices", "type"):
                    target = key
                else:
                    target = "name"
                form.add_error(target, message)
                return
        self._non_form_errors = self.error_class(
            [*self.non_form_errors(), message], error_class="nonform"
        )


ParamFormSet = formset_factory(ParamForm, formset=BaseParamFormSet, extra=0, can_delete=True)


def editable_search_space(study: Study) -> bool:
    """Whether the editor can show this space: each of its rows has one condition at most."""
    return all(len(spec.get("when") or {}) <= 1 for spec in study.search_space.values())


def param_initial(study: Study) -> list[dict[str, Any]]:
    """The editor's rows for an existing study's search space."""
    rows = []
    for name, spec in study.search_space.items():
        row: dict[str, Any] = {"name": name, "type": spec["type"]}
        if spec["type"] == "categorical":
            row["choices"] = format_list(spec["choices"])
        else:
            row["low"], row["high"] = str(spec["low"]), str(spec["high"])
            row["step"] = "" if spec.get("step") is None else str(spec["step"])
            row["log"] = bool(spec.get("log"))
        for parent, allowed in (spec.get("when") or {}).items():
            row["when_param"], row["when_values"] = parent, format_list(allowed)
        rows.append(row)
    return rows
