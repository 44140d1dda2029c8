"""Concurrent writes: a slow PATCH loses no ask's parameter; seeded asks in many processes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from studies.actions import do_update_study
from studies.api import ask_tell
from studies.models import Study
from studies.storage import get_storage
from tests.test_api_ask_tell import ask, create, post
from tests.test_api_live import create_study, session_for

SPACE = {"x": {"type": "float", "low": -5, "high": 5}, "k": {"type": "int", "low": 0, "high": 9}}


def test_a_patch_loaded_before_an_ask_does_not_undo_the_asks_new_parameter(api, alice):
    study_id = create(api, search_space={"x": SPACE["x"]})
    # A PATCH reads the row, then (slowly) saves; meanwhile an ask declares "k".
    loaded_by_the_patch = Study.objects.get(pk=study_id)
    ask(api, study_id, search_space=SPACE)
    do_update_study(loaded_by_the_patch, alice, {"user_attrs": {"note": "edited"}})

    study = Study.objects.get(pk=study_id)
    assert study.user_attrs == {"note": "edited"}
    assert set(study.param_distributions) == {"x", "k"}
    # So "k" keeps its first distribution: an incompatible one is still refused.
    clash = {"k": {"type": "categorical", "choices": ["a", "b"]}}
    response = api.post(f"/api/studies/{study_id}/ask/", {"search_space": clash}, format="json")
    assert response.status_code in (400, 409), response.json()


def tell(api, trial: dict) -> None:
    value = trial["params"]["x"] ** 2 + trial["params"]["k"]
    response = post(api, f"/api/trials/{trial['trial_id']}/tell/", {"values": [value]})
    assert response.status_code == 200


def asks_one_per_process(api, study_id: int, n: int) -> list[dict]:
    """n ask + tell, each served as by a freshly started process (no cached sampler)."""
    params = []
    for _ in range(n):
        ask_tell._studies.clear()
        get_storage.cache_clear()
        trial = ask(api, study_id)
        params.append(trial["params"])
        tell(api, trial)
    return params


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_a_seeded_study_samples_each_trial_alike_whichever_process_serves_it(
    api, django_user_model, sampler
):
    config = {"type": sampler, "options": {}, "seed": 11}
    if sampler == "tpe":
        config["options"] = {"n_startup_trials": 3}
    first = create(api, name="first", search_space=SPACE, sampler=config)
    second = create(api, name="second", search_space=SPACE, sampler=config)
    one_process_each = asks_one_per_process(api, first, 8)

    same_process = []
    for _ in range(8):
        trial = ask(api, second)
        same_process.append(trial["params"])
        tell(api, trial)
    assert one_process_each == same_process
    assert len({(p["x"], p["k"]) for p in same_process}) == 8


@pytest.mark.slow
def test_two_web_workers_never_ask_a_seeded_study_the_same_params(hub_server, alice):
    session = session_for(alice)
    study_id = create_study(
        session,
        hub_server,
        name="seeded",
        search_space=SPACE,
        sampler={"type": "random", "seed": 3},
    )

    def client(_: int) -> list[tuple[float, int]]:
        # A connection per request, so both gunicorn workers serve this client.
        drawn = []
        for _ in range(10):
            headers = {**session.headers, "Connection": "close"}
            url = f"{hub_server}/api/studies/{study_id}/ask/"
            response = requests.post(url, headers=headers, timeout=30)
            assert response.status_code == 201, response.text
            drawn.append((response.json()["params"]["x"], response.json()["params"]["k"]))
        return drawn

    with ThreadPoolExecutor(2) as pool:
        drawn = [p for batch in pool.map(client, range(2)) for p in batch]
    assert len(drawn) == 20 and len(set(drawn)) == 20
