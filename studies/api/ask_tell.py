"""Ask, enqueue, suggest, report and tell over HTTP, through Optuna itself.

Each request works on an optuna.Study over the shared DjangoStorage. Samplers
keep state between trials (a seeded RNG, CMA-ES's distribution, TPE's constant
liar), so the optuna.Study of each study is kept per process and rebuilt only
when the study's row changes: a seeded study driven over HTTP by one server
process samples what the same study would sample in one Python process.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import optuna
from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.db import transaction
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState, create_trial
from rest_framework import status
from rest_framework.exceptions import APIException, NotFound, ValidationError

from studies.config.search_space import (
    SearchSpace,
    in_choices,
    is_int,
    is_number,
    suggest,
    to_distribution,
)
from studies.config.study import check_compatible
from studies.models import Study, Trial, json_safe
from studies.ops.metrics import count_ask, count_tell
from studies.storage import get_storage, optuna_study_for

CACHE_SIZE = 64


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the trial's state."
    default_code = "conflict"


@contextmanager
def still_there(what: str) -> Iterator[None]:
    """A study or trial deleted while the request ran is a 404, not a storage KeyError."""
    try:
        yield
    except (KeyError, ObjectDoesNotExist):
        raise NotFound(f"The {what} was deleted.") from None


_lock = threading.Lock()
_studies: OrderedDict[int, tuple[datetime, Any, optuna.Study]] = OrderedDict()


def cached_study(study: Study) -> optuna.Study:
    """The process's optuna.Study for ``study``, rebuilt when its row was saved since."""
    storage = get_storage()
    with _lock:
        cached = _studies.get(study.pk)
        if cached is not None and cached[0] == study.updated_at and cached[1] is storage:
            _studies.move_to_end(study.pk)
            return cached[2]
        optuna_study = optuna_study_for(study, storage)
        _studies[study.pk] = (study.updated_at, storage, optuna_study)
        while len(_studies) > CACHE_SIZE:
            _studies.popitem(last=False)
        return optuna_study


def ask(study: Study, search_space: SearchSpace | None = None) -> dict[str, Any]:
    """Start a trial (or pop an enqueued one) and sample the search space on it."""
    space = study.search_space if search_space is None else search_space
    # An incompatible distribution would fail after the trial exists: refuse first.
    check_compatible(space, study.param_distributions)
    with still_there("study"):
        optuna_study = cached_study(study)
        trial = optuna_study.ask()
    count_ask("api")
    try:
        params = suggest(trial, space)
    except (ValueError, TypeError) as e:
        # For instance an enqueued value the space no longer admits. The trial
        # exists now: fail it, as Optuna fails a trial whose objective raised.
        with finishing(optuna_study):
            optuna_study.tell(trial.number, state=TrialState.FAIL)
        raise Conflict(f"trial {trial.number} failed while sampling: {e}") from None
    return {"trial_id": trial._trial_id, "number": trial.number, "params": json_safe(params)}


def check_enqueued(space: SearchSpace, params: dict[str, Any]) -> None:
    """Enqueued values must be values of the declared space (Optuna would only warn)."""
    if not space:
        return  # define-by-run: the client's suggest calls declare the distributions
    for name, value in params.items():
        field = f"params.{name}"
        spec = space.get(name)
        if spec is None:
            raise ValidationError({field: ["is not a parameter of the study's search space"]})
        if spec["type"] == "categorical":
            if not in_choices(value, spec["choices"]):
                raise ValidationError({field: [f"{value!r} is not one of the choices"]})
            continue
        is_valid = is_number if spec["type"] == "float" else is_int
        if not is_valid(value) or not to_distribution(spec)._contains(float(value)):
            word = "a number" if spec["type"] == "float" else "an integer"
            where = f"in [{spec['low']}, {spec['high']}]"
            if "step" in spec:
                where += f" on the step {spec['step']}"
            raise ValidationError({field: [f"must be {word} {where}"]})


def enqueue(study: Study, params: dict[str, Any], user_attrs: dict[str, Any]) -> Trial:
    """Queue a trial with fixed parameters; the next ask returns it."""
    check_enqueued(study.search_space, params)
    # What optuna.Study.enqueue_trial does, through the storage so we learn the trial's id.
    template = create_trial(
        state=TrialState.WAITING, system_attrs={"fixed_params": params}, user_attrs=user_attrs
    )
    with still_there("study"):
        trial_id = get_storage().create_new_trial(study.pk, template_trial=template)
        return Trial.objects.get(pk=trial_id)


def _lock_running(trial: Trial) -> None:
    state = Trial.objects.select_for_update().filter(pk=trial.pk).values_list("state", flat=True)
    found = list(state)
    if not found:
        raise NotFound("The trial was deleted.")
    if found[0] != TrialState.RUNNING:
        raise Conflict(f"the trial is {TrialState(found[0]).name}, not RUNNING")


def suggest_param(trial: Trial, name: str, spec: dict[str, Any]) -> Any:
    """Define-by-run: the trial's value for ``name``, sampled on first request."""
    # One transaction with the trial's row locked, so two requests for the same
    # name cannot both sample it: the second sees the first's value.
    with transaction.atomic():
        _lock_running(trial)
        optuna_trial = optuna.Trial(cached_study(trial.study), trial.pk)
        # Each new parameter rewrites the trial's params: bound them, as declared spaces are.
        known = optuna_trial._cached_frozen_trial.params
        if name not in known and len(known) >= settings.HUB_MAX_PARAMS:
            limit = settings.HUB_MAX_PARAMS
            raise ValidationError({"name": [f"the trial has {limit} parameters, the most allowed"]})
        try:
            value = suggest(optuna_trial, {name: spec})[name]
        except ValueError as e:
            raise ValidationError({"distribution": [str(e)]}) from None
    return json_safe(value)


def report(trial: Trial, step: int, value: float) -> bool:
    """Record an intermediate value; return whether the study's pruner would prune."""
    if trial.study.is_multi_objective:
        raise ValidationError(
            {"non_field_errors": ["report is not supported for multi-objective studies (Optuna)"]}
        )
    with transaction.atomic():
        _lock_running(trial)
        optuna_trial = optuna.Trial(cached_study(trial.study), trial.pk)
        # A step already reported keeps its first value, as in Optuna (without its warning).
        if step not in optuna_trial._cached_frozen_trial.intermediate_values:
            optuna_trial.report(value, step)
        return optuna_trial.should_prune()


@contextmanager
def finishing(optuna_study: optuna.Study) -> Iterator[None]:
    # GridSampler and BruteForceSampler call study.stop() after the last point,
    # which raises outside study.optimize(). Over HTTP there is no loop to stop.
    local = optuna_study._thread_local
    local.in_optimize_loop = True
    try:
        yield
    finally:
        local.in_optimize_loop = False
        optuna_study._stop_flag = False


def outcome(values: list[float | None] | None, state: TrialState | None) -> tuple:
    """The (state, values) a tell request leaves the trial in, as Optuna decides it."""
    if state in (TrialState.PRUNED, TrialState.FAIL):
        return state, None
    assert values is not None
    values = [math.nan if v is None else float(v) for v in values]
    if any(math.isnan(v) for v in values):
        return TrialState.FAIL, None  # Optuna fails a trial whose value is NaN
    return TrialState.COMPLETE, values


def is_same_outcome(trial: Trial, state: TrialState, values: list[float] | None) -> bool:
    if trial.state != state:
        return False
    if state != TrialState.COMPLETE:
        return True  # pruned and failed trials carry no told values
    return trial.values is not None and [float(v) for v in trial.values] == values


def tell(trial: Trial, values: list[float | None] | None, state: TrialState | None) -> Trial:
    """Finish the trial; retelling the same outcome is accepted, a different one is a 409."""
    state, values = outcome(values, state)
    if TrialState(trial.state).is_finished() or trial.state != TrialState.RUNNING:
        return _already_told(trial, state, values)
    with still_there("trial"):
        optuna_study = cached_study(trial.study)
        try:
            with finishing(optuna_study):
                optuna_study.tell(trial.number, values, state=state)
            count_tell("api", state)
        except (UpdateFinishedTrialError, ValueError):
            # Another request finished it first (or it is not running any more).
            trial.refresh_from_db()
            if trial.state == TrialState.RUNNING:
                raise
            return _already_told(trial, state, values)
        trial.refresh_from_db()
    return trial


def _already_told(trial: Trial, state: TrialState, values: list[float] | None) -> Trial:
    if is_same_outcome(trial, state, values):
        return trial
    current = TrialState(trial.state).name
    if current == "WAITING":
        raise Conflict("the trial is WAITING: ask for it before telling it")
    raise Conflict(f"the trial is already {current} with values {json_safe(trial.values)}")
