"""Whole optimizations driven purely over HTTP against a real gunicorn server."""

from __future__ import annotations

import math
import threading
from collections import Counter

import optuna
import pytest
import requests
from optuna.distributions import FloatDistribution
from optuna.trial import create_trial

from tests.conftest import token_for

pytestmark = pytest.mark.slow

CONDITIONAL_SPACE = {
    "model": {"type": "categorical", "choices": ["linear", "tree"]},
    "x": {"type": "float", "low": -10, "high": 10, "when": {"model": ["linear"]}},
    "depth": {"type": "int", "low": 1, "high": 12, "when": {"model": ["tree"]}},
    "lr": {"type": "float", "low": 1e-4, "high": 1, "log": True, "when": {"model": ["tree"]}},
}


def loss(params: dict) -> float:
    # The optimum, 0, is the tree with depth 7 and lr 0.01; the best linear model scores 5.
    if params["model"] == "linear":
        return 5 + (params["x"] - 3) ** 2 / 10
    return (params["depth"] - 7) ** 2 + 10 * (math.log10(params["lr"]) + 2) ** 2


def session_for(user) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Token {token_for(user)}"
    return session


def create_study(session: requests.Session, base: str, **data) -> int:
    response = session.post(f"{base}/api/studies/", json=data, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_tpe_reaches_the_optimum_of_a_conditional_space_over_http(hub_server, alice):
    session = session_for(alice)
    study_id = create_study(
        session,
        hub_server,
        name="conditional",
        # A seed whose 100 trials find it (TPE misses it for about 1 seed in 6):
        # each trial is seeded from (seed, number), as in every process.
        sampler={"type": "tpe", "seed": 4},
        search_space=CONDITIONAL_SPACE,
    )
    for _ in range(100):
        trial = session.post(f"{hub_server}/api/studies/{study_id}/ask/", timeout=30).json()
        params = trial["params"]
        # The conditions hold in every trial.
        assert set(params) == (
            {"model", "x"} if params["model"] == "linear" else {"model", "depth", "lr"}
        )
        response = session.post(
            f"{hub_server}/api/trials/{trial['trial_id']}/tell/",
            json={"values": [loss(params)]},
            timeout=30,
        )
        assert response.status_code == 200 and response.json()["state"] == "COMPLETE"

    study = session.get(f"{hub_server}/api/studies/{study_id}/", timeout=30).json()
    assert study["trial_counts"]["COMPLETE"] == 100
    best = study["best_trial"]
    # Below 1 only with depth exactly 7 and lr within a factor 2.1 of 0.01.
    assert best["values"][0] < 1.0, best
    assert best["params"]["model"] == "tree" and best["params"]["depth"] == 7
    assert 0.005 < best["params"]["lr"] < 0.02


def test_eight_clients_asking_and_telling_at_once_lose_and_duplicate_nothing(hub_server, alice):
    base = hub_server
    study_id = create_study(
        session_for(alice),
        base,
        name="concurrent",
        search_space={"x": {"type": "float", "low": 0, "high": 1}},
    )
    told: dict[int, float] = {}
    errors: list[str] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        session = session_for(alice)
        for i in range(15):
            ask = session.post(f"{base}/api/studies/{study_id}/ask/", timeout=60)
            if ask.status_code != 201:
                errors.append(f"ask {ask.status_code}: {ask.text}")
                return
            trial_id = ask.json()["trial_id"]
            value = index * 100 + i
            tell = session.post(
                f"{base}/api/trials/{trial_id}/tell/", json={"values": [value]}, timeout=60
            )
            if tell.status_code != 200:
                errors.append(f"tell {tell.status_code}: {tell.text}")
                return
            with lock:
                assert trial_id not in told
                told[trial_id] = value

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(told) == 120

    session = session_for(alice)
    url = f"{base}/api/studies/{study_id}/trials/?page_size=1000"
    trials = session.get(url, timeout=30).json()["results"]
    assert sorted(t["number"] for t in trials) == list(range(120))  # unique and gap-free
    assert Counter(t["state"] for t in trials) == {"COMPLETE": 120}
    assert {t["trial_id"]: t["values"][0] for t in trials} == told


def test_multi_objective_best_trials_are_optunas_pareto_set(hub_server, alice):
    session = session_for(alice)
    study_id = create_study(
        session,
        hub_server,
        name="pareto",
        directions=["minimize", "maximize"],
        sampler={"type": "random", "seed": 3},
        search_space={
            "x": {"type": "float", "low": 0, "high": 1},
            "y": {"type": "float", "low": 0, "high": 1},
        },
    )
    # Two identical points and a failed trial, which Pareto fronts must handle.
    for _ in range(2):
        session.post(
            f"{hub_server}/api/studies/{study_id}/enqueue/",
            json={"params": {"x": 0.5, "y": 0.5}},
            timeout=30,
        )
    for i in range(40):
        trial = session.post(f"{hub_server}/api/studies/{study_id}/ask/", timeout=30).json()
        x, y = trial["params"]["x"], trial["params"]["y"]
        body = {"state": "fail"} if i == 7 else {"values": [x, x - y]}
        response = session.post(
            f"{hub_server}/api/trials/{trial['trial_id']}/tell/", json=body, timeout=30
        )
        assert response.status_code == 200

    trials = session.get(
        f"{hub_server}/api/studies/{study_id}/trials/?page_size=100", timeout=30
    ).json()["results"]
    reference = optuna.create_study(directions=["minimize", "maximize"])
    for trial in trials:
        reference.add_trial(
            create_trial(
                state=optuna.trial.TrialState[trial["state"]],
                values=trial["values"],
                params=trial["params"],
                distributions={name: FloatDistribution(0, 1) for name in trial["params"]},
            )
        )
    expected = sorted(t.number for t in reference.best_trials)
    study = session.get(f"{hub_server}/api/studies/{study_id}/", timeout=30).json()
    assert study["best_trial"] is None
    assert sorted(t["number"] for t in study["best_trials"]) == expected
    assert len(expected) >= 3


def test_concurrent_suggests_of_one_name_all_get_the_same_value(hub_server, alice):
    session = session_for(alice)
    study_id = create_study(session, hub_server, name="define-by-run")
    trial_id = session.post(f"{hub_server}/api/studies/{study_id}/ask/", timeout=30).json()[
        "trial_id"
    ]
    body = {"name": "lr", "distribution": {"type": "float", "low": 1e-5, "high": 1, "log": True}}
    values: list = []
    barrier = threading.Barrier(8)

    def client() -> None:
        own = session_for(alice)
        barrier.wait()
        response = own.post(f"{hub_server}/api/trials/{trial_id}/suggest/", json=body, timeout=60)
        values.append((response.status_code, response.json()))

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {status for status, _ in values} == {200}
    assert len({data["value"] for _, data in values}) == 1
    trial = session.get(f"{hub_server}/api/trials/{trial_id}/", timeout=30).json()
    assert trial["params"] == {"lr": values[0][1]["value"]}


def test_racing_tells_of_one_trial_leave_one_outcome_and_retries_stay_safe(hub_server, alice):
    session = session_for(alice)
    study_id = create_study(session, hub_server, name="race")
    trial_id = session.post(f"{hub_server}/api/studies/{study_id}/ask/", timeout=30).json()[
        "trial_id"
    ]
    results: list[tuple[float, int]] = []
    barrier = threading.Barrier(8)

    def client(value: float) -> None:
        own = session_for(alice)
        barrier.wait()
        url = f"{hub_server}/api/trials/{trial_id}/tell/"
        response = own.post(url, json={"values": [value]}, timeout=60)
        results.append((value, response.status_code))

    threads = [threading.Thread(target=client, args=(float(i % 2),)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    trial = session.get(f"{hub_server}/api/trials/{trial_id}/", timeout=30).json()
    assert trial["state"] == "COMPLETE"
    winner = trial["values"][0]
    # Everyone who told the stored outcome got 200; everyone else a 409.
    assert sorted(results) == sorted((v, 200 if v == winner else 409) for v, _ in results)
