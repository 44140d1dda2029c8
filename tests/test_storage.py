"""DjangoStorage beyond the conformance suite: faithfulness, caching, processes, heartbeats."""

from __future__ import annotations

import math
import subprocess
import sys
import threading
from datetime import timedelta
from typing import Any

import optuna
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from studies.models import Study, Trial
from studies.storage import DjangoStorage, sqlite
from tests.conftest import BASE_DIR, subprocess_env

optuna.logging.set_verbosity(optuna.logging.WARNING)


def objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -10, 10)
    n = trial.suggest_int("n", 1, 100, log=True)
    kind = trial.suggest_categorical("kind", ["a", "b", None, 1.5])
    return (x - 2) ** 2 + math.log(n) + (0.5 if kind is None else 0)


def comparable(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """A trial's data with nan made comparable (nan != nan) and ids left out."""

    def fix(value: Any) -> Any:
        if isinstance(value, float) and math.isnan(value):
            return "nan"
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [fix(v) for v in value]
        return value

    return {
        "number": trial.number,
        "state": trial.state,
        "values": fix(trial.values),
        "params": fix(trial.params),
        "distributions": trial.distributions,
        "intermediate_values": fix(trial.intermediate_values),
        "user_attrs": fix(trial.user_attrs),
        "system_attrs": fix(trial.system_attrs),
        "datetime_start": trial.datetime_start,
        "datetime_complete": trial.datetime_complete,
    }


def test_seeded_tpe_picks_the_same_params_as_in_memory(db):
    reference = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=7))
    reference.optimize(objective, n_trials=200)
    study = optuna.create_study(storage=DjangoStorage(), sampler=optuna.samplers.TPESampler(seed=7))
    study.optimize(objective, n_trials=200)

    assert [t.params for t in study.trials] == [t.params for t in reference.trials]
    assert [t.values for t in study.trials] == [t.values for t in reference.trials]


def test_odd_values_round_trip_exactly_as_optuna_keeps_them(db):
    source = optuna.create_study(directions=["minimize", "maximize"], study_name="odd")
    source.set_user_attr("limits", {"inf": math.inf, "nan": math.nan, "tags": ["a", "b"]})
    source._storage.set_study_system_attr(source._study_id, "tiny", 5e-324)
    odd = [math.inf, -math.inf, math.nan, 0.1 + 0.2, 1e308, -0.0]
    for i, value in enumerate(odd):
        trial = source.ask(
            {
                "x": FloatDistribution(1e-8, 1e8, log=True),
                "n": IntDistribution(0, 10, step=2),
                "c": CategoricalDistribution([None, True, 1, 2.5, "s"]),
            }
        )
        # Trial.report is single-objective only; the storage keeps any study's.
        source._storage.set_trial_intermediate_value(trial._trial_id, i, value)
        source._storage.set_trial_intermediate_value(trial._trial_id, i + 100, -value)
        trial.set_user_attr("value", value)
        trial.set_user_attr("nested", {"list": [value, None, "x"]})
        trial.set_user_attr("big", 2**70 + i)  # past 64 bits: orjson hands it to json
        if math.isnan(value):
            source.tell(trial, state=TrialState.FAIL)
        else:
            source.tell(trial, [value, -value])
    pruned = source.ask()
    source.tell(pruned, state=TrialState.PRUNED)
    source.ask()  # left RUNNING
    source.enqueue_trial({"x": 3.0})  # left WAITING

    optuna.copy_study(
        from_study_name="odd", from_storage=source._storage, to_storage=DjangoStorage()
    )
    copied = optuna.load_study(study_name="odd", storage=DjangoStorage())
    # Read through a fresh storage, so nothing comes from the writer's cache.
    fresh = DjangoStorage().get_all_trials(copied._study_id)

    assert [comparable(t) for t in fresh] == [comparable(t) for t in source.trials]
    assert comparable(fresh[0])["user_attrs"] == {
        "value": math.inf,
        "nested": {"list": [math.inf, None, "x"]},
        "big": 2**70,
    }
    assert math.isnan(copied.user_attrs["limits"]["nan"])
    assert copied.user_attrs["limits"]["inf"] == math.inf
    assert copied._storage.get_study_system_attrs(copied._study_id)["tiny"] == 5e-324
    assert copied.directions == source.directions


def test_a_sampler_reads_only_new_and_unfinished_trials(db):
    storage = DjangoStorage()
    study = optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=30)
    running = study.ask()
    storage.get_all_trials(study._study_id, deepcopy=False)

    with CaptureQueriesContext(connection) as queries:
        trials = storage.get_all_trials(study._study_id, deepcopy=False)
    assert len(queries) == 1
    assert len(trials) == 31

    # Another process (here: another storage) finishes the running trial and adds one.
    other = optuna.load_study(study_name=study.study_name, storage=DjangoStorage())
    other.tell(running.number, 1.0)
    other.optimize(objective, n_trials=1)

    trials = storage.get_all_trials(study._study_id, deepcopy=False)
    assert [t.number for t in trials] == list(range(32))
    assert trials[30].state == TrialState.COMPLETE and trials[30].value == 1.0
    assert trials[31].state == TrialState.COMPLETE


def test_finished_trials_are_cached_but_never_shared_mutably(db):
    storage = DjangoStorage()
    study = optuna.create_study(storage=storage)
    study.optimize(objective, n_trials=3)
    study.tell(study.ask(), 1.0)
    trial = study.ask()
    trial.set_user_attr("nested", {"list": [1, 2]})
    study.tell(trial, 2.0)
    first = storage.get_all_trials(study._study_id)
    first[0].params["x"] = 1234.0
    first[-1].user_attrs["nested"]["list"].append(3)
    first[-1].distributions["x"] = None
    first[-1].intermediate_values[7] = 1.0
    first[0].distributions["x"].low = -99.0

    again = storage.get_all_trials(study._study_id)
    assert again == storage.get_all_trials(study._study_id, deepcopy=False)
    assert again[0].distributions["x"].low == -10
    assert again[0].params["x"] != 1234.0
    assert again[-1].user_attrs == {"nested": {"list": [1, 2]}}
    assert "x" not in again[-1].distributions and again[-1].intermediate_values == {}
    assert [t._trial_id for t in again] == [t._trial_id for t in first]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
def test_stale_trials_fail_and_are_retried_with_the_same_params(db):
    storage = DjangoStorage(
        heartbeat_interval=1,
        grace_period=2,
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(),
    )
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    x = trial.suggest_float("x", 0, 1)
    storage.record_heartbeat(trial._trial_id)
    alive = study.ask()
    storage.record_heartbeat(alive._trial_id)
    # The first worker dies: its heartbeat stops while the other's goes on.
    Trial.objects.filter(pk=trial._trial_id).update(heartbeat=timezone.now() - timedelta(seconds=5))

    optuna.storages.fail_stale_trials(study)

    trials = study.get_trials(deepcopy=False)
    assert trials[0].state == TrialState.FAIL
    assert trials[1].state == TrialState.RUNNING
    assert trials[2].state == TrialState.WAITING
    retried = study.ask()
    assert retried.number == 2
    assert retried.suggest_float("x", 0, 1) == x


def test_names_clash_as_in_optuna(db):
    optuna.create_study(study_name="taken", storage=DjangoStorage())
    with pytest.raises(optuna.exceptions.DuplicatedStudyError):
        optuna.create_study(study_name="taken", storage=DjangoStorage())


def summary(study: optuna.Study) -> tuple[Any, ...]:
    row = Study.objects.get(pk=study._study_id)
    return row.trial_counts(), row.n_trials, row.best_value, row.last_activity


def test_the_study_row_keeps_counts_and_best_value_through_every_kind_of_write(db):
    study = optuna.create_study(study_name="kept", storage=DjangoStorage(), direction="maximize")
    row = Study.objects.get(pk=study._study_id)
    study.enqueue_trial({"x": 0.5})
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)  # the waiting one runs first
    running = study.ask()
    study.tell(study.ask(), state=TrialState.PRUNED)
    study.tell(study.ask(), state=TrialState.FAIL)
    study.add_trial(optuna.trial.create_trial(value=7.0, params={}, distributions={}))
    study.enqueue_trial({"x": 0.1})

    counts, n_trials, best, last = summary(study)
    assert counts == row.trials.counts_by_state()
    assert counts == {"RUNNING": 1, "COMPLETE": 4, "PRUNED": 1, "FAIL": 1, "WAITING": 1}
    assert n_trials == 8 and best == 7.0 == study.best_value
    assert last >= timezone.now() - timedelta(minutes=1)
    study.tell(running, 9.5)
    assert summary(study)[0]["RUNNING"] == 0 and summary(study)[2] == 9.5
    # A finished trial takes no second state: nothing may be counted twice.
    with pytest.raises(ValueError, match="Cannot tell a COMPLETE trial"):
        study.tell(running, 1.0)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        study._storage.set_trial_state_values(running._trial_id, TrialState.FAIL)
    assert summary(study)[0] == Study.objects.get(pk=row.pk).trials.counts_by_state()


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_best_trial_and_counts_are_optunas_from_one_indexed_query(db, direction):
    storage = DjangoStorage()
    study = optuna.create_study(study_name="best", storage=storage, direction=direction)
    with pytest.raises(ValueError, match="No trials are completed yet"):
        storage.get_best_trial(study._study_id)
    for value in [3.0, -1.0, math.inf, -1.0, 2.0, -math.inf, 5.0]:
        study.add_trial(optuna.trial.create_trial(value=value))
    study.tell(study.ask(), state=TrialState.FAIL)
    study.ask()
    fresh = DjangoStorage()
    with CaptureQueriesContext(connection) as queries:
        best = fresh.get_best_trial(study._study_id)
    assert len(queries) <= 3 and not fresh._studies  # no pass over all trials
    # Optuna's own rule, over every trial: the first of the best values.
    assert best == optuna.storages.BaseStorage.get_best_trial(fresh, study._study_id)
    assert best.number == (5 if direction == "minimize" else 2)
    for state in [None, TrialState.COMPLETE, (TrialState.RUNNING, TrialState.FAIL), ()]:
        expected = optuna.storages.BaseStorage.get_n_trials(fresh, study._study_id, state)
        assert fresh.get_n_trials(study._study_id, state) == expected
    with pytest.raises(KeyError):
        fresh.get_n_trials(study._study_id + 1)


def test_best_trial_is_for_one_objective_only(db):
    study = optuna.create_study(storage=DjangoStorage(), directions=["minimize", "maximize"])
    study.add_trial(optuna.trial.create_trial(values=[1.0, 2.0]))
    with pytest.raises(RuntimeError, match="single-objective"):
        study._storage.get_best_trial(study._study_id)
    assert Study.objects.get(pk=study._study_id).best_value is None


WORKER = """
import django, optuna, sys
django.setup()
from studies.storage import DjangoStorage
optuna.logging.set_verbosity(optuna.logging.ERROR)

def objective(trial):
    x = trial.suggest_float("x", -1, 1)
    if x > 0.8:
        raise optuna.TrialPruned()
    if x < -0.8:
        raise ValueError("fails on purpose")
    return x ** 2

study = optuna.load_study(study_name="race", storage=DjangoStorage())
study.optimize(objective, n_trials=int(sys.argv[1]), catch=(ValueError,))
"""


@pytest.mark.slow
def test_four_processes_number_two_hundred_trials_exactly_once(transactional_db):
    study = optuna.create_study(study_name="race", storage=DjangoStorage())
    env = subprocess_env()
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, "50"], cwd=BASE_DIR, env=env)
        for _ in range(4)
    ]
    assert [w.wait(timeout=300) for w in workers] == [0, 0, 0, 0]

    trials = study.get_trials()
    assert sorted(t.number for t in trials) == list(range(200))
    assert all(t.state.is_finished() for t in trials)
    assert Trial.objects.filter(study__name="race").count() == 200
    # The summary the storage keeps on the study row added up under the race.
    row = Study.objects.get(name="race")
    assert row.trial_counts() == row.trials.counts_by_state()
    assert {"COMPLETE", "PRUNED", "FAIL"} <= {s for s, n in row.trial_counts().items() if n}
    assert row.n_trials == 200
    assert row.best_value == study.best_value


def test_the_first_writes_of_many_threads_at_once_all_succeed(transactional_db):
    optuna.create_study(study_name="burst", storage=DjangoStorage())
    sqlite._forget_writer_queues()  # as in a fresh worker process
    # Switch threads as often as possible, so racing first uses interleave.
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    barrier = threading.Barrier(16)
    errors: list[BaseException] = []

    def first_write() -> None:
        from django.db import connection

        try:
            storage = DjangoStorage()
            study_id = storage.get_study_id_from_name("burst")
            barrier.wait()
            storage.create_new_trial(study_id)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            connection.close()

    threads = [threading.Thread(target=first_write) for _ in range(16)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(previous)

    assert errors == []
    numbers = Trial.objects.filter(study__name="burst").values_list("number", flat=True)
    assert sorted(numbers) == list(range(16))
