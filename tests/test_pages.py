"""The browser pages: every page, the new-study form's errors and who may change what."""

from __future__ import annotations

import gzip
import json
import math
from typing import Any

import optuna
import plotly
import pytest
from django.core.cache import cache
from django.urls import reverse
from optuna.trial import TrialState
from plotly.offline import get_plotlyjs_version

from studies import charts
from studies.actions import do_start_job
from studies.config.errors import ConfigError
from studies.config.search_space import suggest
from studies.config.study import clean_study_config
from studies.models import Job, JobTrial, Study
from studies.storage import optuna_study_for
from studies.templatetags.hub import fmt_duration, fmt_value
from studies.views.assets import PLOTLY_BUNDLE, plotly_version

SPACE = {
    "booster": {"type": "categorical", "choices": ["gbtree", "dart"]},
    "x": {"type": "float", "low": -5.0, "high": 5.0},
    "rate_drop": {"type": "float", "low": 0.0, "high": 1.0, "when": {"booster": ["dart"]}},
}


@pytest.fixture(autouse=True)
def fresh_chart_caches() -> None:
    # Test databases reuse ids after each rollback; a real hub never does.
    cache.clear()
    charts.trial_data_cache.entries.clear()


def make_study(owner: Any, name: str = "demo", **fields: Any) -> Study:
    fields.setdefault("directions", ["minimize"])
    fields.setdefault("search_space", SPACE)
    fields.setdefault("sampler", {"type": "random", "options": {}, "seed": 1})
    return Study.objects.create(name=name, owner=owner, **fields)


def run_trials(study: Study, n: int, *, fail_every: int = 0, report: bool = False) -> None:
    """Real trials through Optuna on the hub's storage, as a worker would run them."""
    optuna_study = optuna_study_for(study)

    def objective(trial: optuna.Trial) -> Any:
        params = suggest(trial, study.search_space)
        if fail_every and trial.number % fail_every == fail_every - 1:
            raise RuntimeError("boom")
        value = params["x"] ** 2 + (0.5 if params["booster"] == "dart" else 0.0)
        if report:
            for step in range(3):
                trial.report(value + 1 / (step + 1), step)
        if len(study.directions) > 1:
            return value, -params["x"]
        return value

    optuna_study.optimize(objective, n_trials=n, catch=(RuntimeError,))


@pytest.fixture
def logged_in(client, alice):
    client.force_login(alice)
    return client


# Logging in


def test_every_page_needs_a_user(client, alice):
    study = make_study(alice)
    run_trials(study, 2)
    trial = study.trials.first()
    urls = [
        reverse("studies:study_list"),
        reverse("studies:study_new"),
        reverse("studies:compare"),
        reverse("studies:study", args=[study.pk]),
        reverse("studies:study_edit", args=[study.pk]),
        reverse("studies:study_delete", args=[study.pk]),
        reverse("studies:study_status", args=[study.pk]),
        reverse("studies:study_trials", args=[study.pk]),
        reverse("studies:chart", args=[study.pk, "history"]),
        reverse("studies:trial", args=[trial.pk]),
    ]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login")), url


def test_a_user_logs_in_and_out(client, alice):
    page = client.get(reverse("login"))
    assert page.status_code == 200
    assert b"Log in" in page.content
    response = client.post(
        reverse("login"), {"username": "alice", "password": "wrong"}, follow=False
    )
    assert response.status_code == 200
    assert b"Please enter a correct username and password" in response.content
    response = client.post(reverse("login"), {"username": "alice", "password": "alice-password"})
    assert response.status_code == 302
    assert client.get(reverse("studies:study_list")).status_code == 200
    assert client.post(reverse("logout")).status_code == 302
    assert client.get(reverse("studies:study_list")).status_code == 302


# Studies list


def test_the_study_list_shows_counts_best_value_running_jobs_and_activity(logged_in, alice):
    study = make_study(alice, objective="sphere", search_space={})
    other = make_study(alice, name="quiet")
    run_trials(other, 6, fail_every=3)
    do_start_job(study, alice, n_trials=5)
    response = logged_in.get(reverse("studies:study_list"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "demo" in html and "quiet" in html
    rows = {row["study"].name: row for row in response.context["rows"]}
    assert rows["quiet"]["counts"]["COMPLETE"] == 4
    assert rows["quiet"]["counts"]["FAIL"] == 2
    best = min(t.value for t in other.trials.filter(state=TrialState.COMPLETE))
    assert fmt_value(rows["quiet"]["best"]) == f"{best:.6g}"
    assert rows["demo"]["jobs"] == 1
    assert "1 running" in html
    assert rows["quiet"]["last_activity"] >= other.trials.order_by("-id")[0].datetime_start


def test_the_study_list_searches_sorts_and_paginates(logged_in, alice, bob):
    for i in range(30):
        make_study(alice if i % 2 else bob, name=f"study-{i:02d}")
    busy = Study.objects.get(name="study-07")
    run_trials(busy, 3)
    response = logged_in.get(reverse("studies:study_list"), {"q": "study-1"})
    names = [row["study"].name for row in response.context["rows"]]
    assert sorted(names) == [f"study-{i}" for i in range(10, 20)]
    response = logged_in.get(reverse("studies:study_list"), {"q": "bob"})
    assert len(response.context["rows"]) == 15
    response = logged_in.get(reverse("studies:study_list"), {"sort": "-trials"})
    assert response.context["rows"][0]["study"].name == "study-07"
    response = logged_in.get(reverse("studies:study_list"), {"sort": "name"})
    assert response.context["rows"][0]["study"].name == "study-00"
    assert len(response.context["rows"]) == 25
    page2 = logged_in.get(reverse("studies:study_list"), {"sort": "name", "page": 2})
    assert [r["study"].name for r in page2.context["rows"]] == [f"study-{i}" for i in range(25, 30)]
    assert b"Page 2 of 2" in page2.content


def test_the_study_list_explains_when_it_is_empty(logged_in):
    response = logged_in.get(reverse("studies:study_list"))
    assert b"No studies yet" in response.content
    response = logged_in.get(reverse("studies:study_list"), {"q": "nothing"})
    assert "No study matches “nothing”" in response.content.decode()


# The new-study form


def form_data(**overrides: Any) -> dict[str, Any]:
    """A valid form post: a conditional search space of three rows."""
    data = {
        "name": "sgd-digits",
        "directions": ["maximize"],
        "objective": "digits_sgd",
        "sampler": "tpe",
        "sampler_seed": "7",
        "sampler_options": '{"n_startup_trials": 5}',
        "pruner": "median",
        "pruner_options": "",
        "params-TOTAL_FORMS": "3",
        "params-INITIAL_FORMS": "0",
        "params-0-name": "loss",
        "params-0-type": "categorical",
        "params-0-choices": "hinge, log_loss",
        "params-1-name": "alpha",
        "params-1-type": "float",
        "params-1-low": "1e-6",
        "params-1-high": "0.1",
        "params-1-log": "on",
        "params-2-name": "eta0",
        "params-2-type": "float",
        "params-2-low": "1e-4",
        "params-2-high": "1",
        "params-2-when_param": "loss",
        "params-2-when_values": "hinge",
    }
    data.update(overrides)
    return data


def test_the_new_study_form_renders_with_one_empty_row(logged_in):
    response = logged_in.get(reverse("studies:study_new"))
    assert response.status_code == 200
    assert response.context["params"].total_form_count() == 1
    html = response.content.decode()
    assert 'name="params-0-name"' in html
    assert "digits_sgd" in html  # the objective menu lists registered objectives
    assert "TPESampler" in html


def test_a_valid_form_creates_the_study_with_its_conditional_search_space(logged_in, alice):
    response = logged_in.post(reverse("studies:study_new"), form_data())
    study = Study.objects.get(name="sgd-digits")
    assert response.status_code == 302
    assert response["Location"] == study.get_absolute_url()
    assert study.owner == alice
    assert study.directions == ["maximize"]
    assert study.objective == "digits_sgd"
    assert study.sampler == {"type": "tpe", "options": {"n_startup_trials": 5}, "seed": 7}
    assert study.search_space == {
        "loss": {"type": "categorical", "choices": ["hinge", "log_loss"]},
        "alpha": {"type": "float", "low": 1e-6, "high": 0.1, "log": True},
        "eta0": {"type": "float", "low": 1e-4, "high": 1, "when": {"loss": ["hinge"]}},
    }


def test_a_removed_or_blank_row_is_not_part_of_the_search_space(logged_in):
    data = form_data(**{"params-TOTAL_FORMS": "5", "params-3-type": "float"})
    data["params-4-name"] = "dropped"
    data["params-4-type"] = "int"
    data["params-4-low"] = "1"
    data["params-4-high"] = "3"
    data["params-4-DELETE"] = "on"
    assert logged_in.post(reverse("studies:study_new"), data).status_code == 302
    assert list(Study.objects.get().search_space) == ["loss", "alpha", "eta0"]


def errors_of(response) -> dict[str, Any]:  # noqa: ANN001
    form, params = response.context["form"], response.context["params"]
    return {
        "form": {k: list(v) for k, v in form.errors.items()},
        "rows": [{k: list(v) for k, v in row.errors.items()} for row in params.forms],
        "params": list(params.non_form_errors()),
    }


@pytest.mark.parametrize(
    ("overrides", "where", "message"),
    [
        ({"name": ""}, ("form", "name"), "is required"),
        ({"directions": ["sideways"]}, ("form", "directions"), 'is not "minimize"'),
        ({"objective": "nope"}, ("form", "objective"), "'nope' is not a registered objective"),
        ({"sampler": "magic"}, ("form", "sampler"), "must be one of"),
        ({"sampler_seed": "seven"}, ("form", "sampler_seed"), "whole number"),
        ({"sampler_options": "{oops"}, ("form", "sampler_options"), "is not valid JSON"),
        (
            {"sampler_options": '{"n_startup": 3}'},
            ("form", "sampler_options"),
            "n_startup: is not an option of TPESampler",
        ),
        ({"pruner_options": '{"n_warmup_steps": "x"}'}, ("form", "pruner_options"), "integer"),
        ({"params-1-low": "abc"}, ("row", 1, "low"), "'abc' is not a number"),
        ({"params-1-low": "1"}, ("row", 1, "low"), "must not be greater than high"),
        ({"params-1-log": "on", "params-1-low": "0"}, ("row", 1, "low"), "greater than 0"),
        ({"params-0-choices": ""}, ("row", 0, "choices"), "at least one choice"),
        ({"params-1-name": "loss"}, ("row", 1, "name"), "already a parameter above"),
        ({"params-2-when_values": "adam"}, ("row", 2, "when_values"), "not one of the choices"),
        ({"params-2-when_param": "alpha"}, ("row", 2, "when_values"), "categorical or int"),
        ({"params-2-when_param": "later"}, ("row", 2, "when_param"), "declared before"),
        ({"params-2-when_values": ""}, ("row", 2, "when_values"), "list the values"),
    ],
)
def test_a_form_error_appears_beside_its_field_and_nothing_is_saved(
    logged_in, overrides, where, message
):
    response = logged_in.post(reverse("studies:study_new"), form_data(**overrides))
    assert response.status_code == 400
    assert not Study.objects.exists()
    errors = errors_of(response)
    found = (
        errors["form"].get(where[1], [])
        if where[0] == "form"
        else errors["rows"][where[1]].get(where[2], [])
    )
    assert any(message in e for e in found), errors
    assert "The study was not saved" in response.content.decode()
    # The page shows the message next to the input, not only at the top.
    assert message.replace('"', "&quot;").replace("'", "&#x27;") in response.content.decode()


def test_sampler_pruner_and_row_mistakes_appear_together(logged_in):
    data = form_data(
        sampler_options='{"n_startup": 3}',
        pruner_options='{"warmup": 1}',
        **{"params-1-low": "1", "params-2-when_values": "adam"},
    )
    response = logged_in.post(reverse("studies:study_new"), data)
    assert response.status_code == 400
    errors = errors_of(response)
    assert set(errors["form"]) == {"sampler_options", "pruner_options"}
    assert "low" in errors["rows"][1] and "when_values" in errors["rows"][2]
    assert not Study.objects.exists()


def test_a_duplicate_name_is_refused_as_the_api_refuses_it(logged_in, alice):
    make_study(alice, name="sgd-digits")
    response = logged_in.post(reverse("studies:study_new"), form_data())
    assert response.status_code == 400
    with pytest.raises(ConfigError) as api_error:
        clean_study_config({"name": "sgd-digits"})
    assert errors_of(response)["form"]["name"] == [api_error.value.message]
    assert Study.objects.count() == 1


def test_several_mistakes_are_reported_at_once(logged_in):
    data = form_data(name="", directions=["up"], **{"params-1-low": "x", "params-0-choices": ""})
    errors = errors_of(logged_in.post(reverse("studies:study_new"), data))
    assert set(errors["form"]) == {"name", "directions"}
    assert "low" in errors["rows"][1] and "choices" in errors["rows"][0]


def test_add_parameter_without_javascript_shows_one_more_row_and_saves_nothing(logged_in):
    data = form_data(add_param="1")
    response = logged_in.post(reverse("studies:study_new"), data)
    assert response.status_code == 200
    assert response.context["params"].total_form_count() == 4
    assert 'name="params-3-name"' in response.content.decode()
    assert not Study.objects.exists()


def test_the_owner_edits_a_study_and_may_not_change_its_directions(logged_in, alice):
    study = make_study(alice, objective="", sampler={"type": "tpe", "options": {}, "seed": None})
    page = logged_in.get(reverse("studies:study_edit", args=[study.pk]))
    assert page.status_code == 200
    assert page.context["params"].total_form_count() == 3
    assert 'value="dart"' in page.content.decode() or "gbtree, dart" in page.content.decode()
    data = {
        "name": "renamed",
        "sampler": "random",
        "sampler_seed": "",
        "sampler_options": "",
        "pruner": "nop",
        "pruner_options": "",
        "objective": "",
        "params-TOTAL_FORMS": "2",
        "params-INITIAL_FORMS": "2",
        "params-0-name": "booster",
        "params-0-type": "categorical",
        "params-0-choices": "gbtree, dart",
        "params-1-name": "x",
        "params-1-type": "float",
        "params-1-low": "-5",
        "params-1-high": "5",
        "directions": ["maximize"],  # ignored: directions are fixed
    }
    response = logged_in.post(reverse("studies:study_edit", args=[study.pk]), data)
    assert response.status_code == 302
    study.refresh_from_db()
    assert study.name == "renamed"
    assert study.sampler["type"] == "random"
    assert study.pruner["type"] == "nop"
    assert list(study.search_space) == ["booster", "x"]
    assert study.directions == ["minimize"]


# Permissions


@pytest.fixture
def alices_study(alice):
    study = make_study(alice, objective="sphere", search_space={})
    return study


def test_another_user_can_look_but_not_change_run_cancel_or_delete(
    client, alice, bob, alices_study
):
    job = do_start_job(alices_study, alice, n_trials=3)
    client.force_login(bob)
    study = alices_study
    assert client.get(reverse("studies:study", args=[study.pk])).status_code == 200
    page = client.get(reverse("studies:study", args=[study.pk])).content.decode()
    assert reverse("studies:study_edit", args=[study.pk]) not in page
    assert reverse("studies:job_cancel", args=[job.pk]) not in page
    assert "Only alice can run this study" in page

    attempts = [
        ("get", reverse("studies:study_edit", args=[study.pk]), {}),
        ("post", reverse("studies:study_edit", args=[study.pk]), {"name": "mine now"}),
        ("get", reverse("studies:study_delete", args=[study.pk]), {}),
        ("post", reverse("studies:study_delete", args=[study.pk]), {}),
        ("post", reverse("studies:study_run", args=[study.pk]), {"n_trials": "5"}),
        ("post", reverse("studies:job_cancel", args=[job.pk]), {}),
    ]
    for method, url, data in attempts:
        response = getattr(client, method)(url, data)
        assert response.status_code == 403, url
        assert "Only the owner can do that" in response.content.decode()
    study.refresh_from_db()
    job.refresh_from_db()
    assert study.name == "demo"
    assert job.status == Job.QUEUED
    assert Job.objects.filter(study=study).count() == 1


def test_staff_can_change_run_cancel_and_delete_any_study(client, staff, alices_study):
    client.force_login(staff)
    study = alices_study
    response = client.post(reverse("studies:study_run", args=[study.pk]), {"n_trials": "4"})
    assert response.status_code == 302
    job = Job.objects.get(study=study)
    assert job.created_by == staff
    assert client.post(reverse("studies:job_cancel", args=[job.pk])).status_code == 302
    job.refresh_from_db()
    assert job.status == Job.CANCELLED
    assert client.post(reverse("studies:study_delete", args=[study.pk])).status_code == 302
    assert not Study.objects.filter(pk=study.pk).exists()


# Running and cancelling jobs


def test_the_run_form_starts_a_job_for_the_owner(logged_in, alice, alices_study):
    response = logged_in.post(
        reverse("studies:study_run", args=[alices_study.pk]),
        {"n_trials": "12", "concurrency": "2", "timeout": "60"},
    )
    assert response.status_code == 302
    assert response["Location"].endswith("#jobs")
    job = Job.objects.get(study=alices_study)
    assert (job.n_trials, job.concurrency, job.timeout) == (12, 2, 60.0)
    page = logged_in.get(reverse("studies:study", args=[alices_study.pk]))
    assert f"Job #{job.pk}" in page.content.decode()
    assert "0 %" in page.content.decode()


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"n_trials": ""}, "n_trials", "is required"),
        ({"n_trials": "many"}, "n_trials", "must be an integer"),
        ({"n_trials": "0"}, "n_trials", "must be at least 1"),
        ({"n_trials": "5", "concurrency": "999"}, "concurrency", "must be at most"),
        ({"n_trials": "5", "timeout": "-1"}, "timeout", "must be greater than 0"),
    ],
)
def test_a_bad_run_form_says_which_field_and_starts_nothing(
    logged_in, alices_study, data, field, message
):
    response = logged_in.post(reverse("studies:study_run", args=[alices_study.pk]), data)
    assert response.status_code == 400
    assert message in response.context["run_errors"][field]
    assert message.replace("'", "&#x27;") in response.content.decode()
    assert not Job.objects.exists()


def test_a_study_without_an_objective_cannot_run(logged_in, alice):
    study = make_study(alice, objective="")
    page = logged_in.get(reverse("studies:study", args=[study.pk])).content.decode()
    assert "This study has no objective" in page
    response = logged_in.post(reverse("studies:study_run", args=[study.pk]), {"n_trials": "3"})
    assert response.status_code == 400
    assert "objective" in response.context["run_errors"]["other"]
    assert not Job.objects.exists()


def test_the_owner_cancels_a_job_from_the_page(logged_in, alice, alices_study):
    job = do_start_job(alices_study, alice, n_trials=3)
    response = logged_in.post(
        reverse("studies:job_cancel", args=[job.pk]), HTTP_ACCEPT="application/json"
    )
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"


# The study page


def test_the_study_page_shows_summary_best_trial_charts_and_trials(logged_in, alice):
    study = make_study(alice)
    run_trials(study, 12, fail_every=4)
    response = logged_in.get(reverse("studies:study", args=[study.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    best = study.trials.filter(state=TrialState.COMPLETE).order_by("value")[0]
    summary = response.context["summary"]
    assert summary["best"] == best
    assert summary["counts"]["COMPLETE"] == 9 and summary["counts"]["FAIL"] == 3
    assert f"Trial #{best.number}" in html
    for name in (
        "history",
        "importances",
        "parallel",
        "slice",
        "contour",
        "edf",
        "intermediate",
        "timeline",
    ):
        assert reverse("studies:chart", args=[study.pk, name]) in html
    assert "pareto" not in [name for name, _ in response.context["charts"]]
    assert reverse("api-study-trials-csv", args=[study.pk]) in html
    assert reverse("api-study-trials-json", args=[study.pk]) in html
    assert reverse("studies:plotly_js", args=[plotly_version()]) in html
    assert len(response.context["table"]["rows"]) == 12
    assert "rate_drop" in html  # conditional parameter column
    assert "booster ∈ {dart}" in html  # the condition in the configuration


def test_a_multi_objective_study_page_shows_the_pareto_set(logged_in, alice):
    study = make_study(alice, directions=["minimize", "maximize"])
    run_trials(study, 15)
    response = logged_in.get(reverse("studies:study", args=[study.pk]))
    names = [name for name, _ in response.context["charts"]]
    assert "pareto" in names and "hypervolume" in names
    optuna_front = {t.number for t in optuna_study_for(study).best_trials}
    shown = {row["number"] for row in response.context["summary"]["pareto"]}
    assert shown == optuna_front
    assert response.context["summary"]["n_pareto"] == len(optuna_front)
    assert b"Pareto set" in response.content


def test_the_trials_table_sorts_filters_and_paginates(logged_in, alice):
    study = make_study(alice)
    run_trials(study, 60, fail_every=5)
    url = reverse("studies:study_trials", args=[study.pk])
    table = logged_in.get(url).context["table"]
    assert [r["trial"].number for r in table["rows"]] == list(range(50))
    assert table["next_url"] == "?sort=number&page=2"
    second = logged_in.get(url, {"page": 2}).context["table"]
    assert [r["trial"].number for r in second["rows"]] == list(range(50, 60))
    failed = logged_in.get(url, {"state": "fail"}).context["table"]
    assert {r["trial"].state for r in failed["rows"]} == {TrialState.FAIL}
    assert failed["page"].paginator.count == 12
    by_value = logged_in.get(url, {"sort": "value"}).context["table"]
    values = [r["trial"].value for r in by_value["rows"] if r["trial"].value is not None]
    assert values == sorted(values) and len(values) == 48
    newest = logged_in.get(url, {"sort": "-number"}).context["table"]
    assert newest["rows"][0]["trial"].number == 59
    longest = logged_in.get(url, {"sort": "-duration", "state": "complete"}).context["table"]
    durations = [r["trial"].duration for r in longest["rows"]]
    assert durations == sorted(durations, reverse=True)
    empty = logged_in.get(url, {"state": "waiting"})
    assert b"No waiting trials." in empty.content


def test_the_status_view_reports_what_the_page_refreshes(logged_in, alice):
    study = make_study(alice, objective="sphere", search_space={})
    url = reverse("studies:study_status", args=[study.pk])
    before = logged_in.get(url).json()
    assert before["n_trials"] == 0 and before["active"] is False
    job = do_start_job(study, alice, n_trials=4)
    optuna_study = optuna_study_for(study)
    optuna_study.optimize(lambda t: t.suggest_float("x0", -1, 1) ** 2, n_trials=2)
    after = logged_in.get(url).json()
    assert after["signature"] != before["signature"]
    assert after["counts"]["COMPLETE"] == 2
    assert after["active"] is True
    assert after["jobs"][0]["id"] == job.pk
    assert after["jobs"][0]["percent"] == 0  # the trials above were not the job's
    assert f"Job #{job.pk}" in after["jobs_html"]
    assert "Best value" in after["summary_html"]


def test_a_job_progress_bar_counts_the_jobs_trials(logged_in, alice):
    study = make_study(alice, objective="sphere", search_space={})
    job = do_start_job(study, alice, n_trials=4)
    optuna_study_for(study).optimize(lambda t: t.suggest_float("x0", -1, 1) ** 2, n_trials=3)
    for trial in study.trials.all():
        JobTrial.objects.create(job=job, trial=trial)
    info = logged_in.get(reverse("studies:study_status", args=[study.pk])).json()["jobs"][0]
    assert info["done"] == 3 and info["percent"] == 75
    assert (
        "75 %"
        in logged_in.get(reverse("studies:study_status", args=[study.pk])).json()["jobs_html"]
    )


# The trial page


def test_the_trial_page_shows_params_values_curve_attributes_and_output(logged_in, alice):
    study = make_study(alice)
    run_trials(study, 3, report=True)
    trial = study.trials.get(number=1)
    # What a command objective leaves on its trial: the last lines it printed.
    trial.system_attrs = {**trial.system_attrs, "hub_output_tail": "epoch 1\nepoch 2\n</pre>done"}
    trial.user_attrs = {"note": "hello", "metrics": {"f1": 0.5}}
    trial.save(update_fields=["user_attrs", "system_attrs"])
    response = logged_in.get(reverse("studies:trial", args=[trial.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    trial.refresh_from_db()
    params = trial.external_params()
    for name, value in params.items():
        assert name in html
        assert (f"{value:.6g}" if isinstance(value, float) else str(value)) in html
    assert f"{trial.value:.6g}" in html
    assert "epoch 1\nepoch 2\n&lt;/pre&gt;done" in html  # escaped, never raw HTML
    assert "hello" in html and "&quot;f1&quot;: 0.5" in html
    curve = json.loads(response.context["curve"])
    assert len(curve["figure"]["data"][0]["y"]["bdata"]) > 0
    assert reverse("studies:trial", args=[study.trials.get(number=0).pk]) in html
    assert reverse("studies:trial", args=[study.trials.get(number=2).pk]) in html
    assert "Command output" in html


def test_the_trial_page_of_a_running_trial_without_values(logged_in, alice):
    study = make_study(alice)
    optuna_study = optuna_study_for(study)
    optuna_study.ask()
    trial = study.trials.get()
    html = logged_in.get(reverse("studies:trial", args=[trial.pk])).content.decode()
    assert "Still running." in html
    assert "reported no intermediate values" in html
    assert "Command output" not in html


# Comparing studies


def test_the_compare_page_overlays_the_histories_of_the_chosen_studies(logged_in, alice):
    first, second = make_study(alice, name="first"), make_study(alice, name="second")
    empty = make_study(alice, name="empty")
    run_trials(first, 8)
    run_trials(second, 5)
    response = logged_in.get(
        reverse("studies:compare"), {"ids": [first.pk, second.pk, empty.pk, 999999]}
    )
    assert response.status_code == 200
    figure = json.loads(response.context["figure"])
    names = [trace["name"] for trace in figure["figure"]["data"]]
    assert names == ["first (minimize)", "second (minimize)"]
    assert "empty has no completed trials" in figure["note"]
    assert response.context["missing"] == 1
    assert b"Pick two or more studies" in logged_in.get(reverse("studies:compare")).content


# plotly.js and the admin


def test_plotly_js_is_the_hubs_partial_bundle_behind_a_url_naming_its_digest(client):
    url = reverse("studies:plotly_js", args=[plotly_version()])
    plain = client.get(url)
    assert plain.status_code == 200
    assert plain.content == PLOTLY_BUNDLE.read_bytes()
    assert "immutable" in plain["Cache-Control"]
    packed = client.get(url, HTTP_ACCEPT_ENCODING="gzip, br")
    assert packed["Content-Encoding"] == "gzip"
    assert gzip.decompress(packed.content) == PLOTLY_BUNDLE.read_bytes()
    # The URL of the full bundle served before, still cached by browsers for a year.
    assert client.get(reverse("studies:plotly_js", args=[plotly.__version__])).status_code == 404
    assert client.get(reverse("studies:plotly_js", args=["0.0.1"])).status_code == 404


def test_the_bundle_is_the_plotly_js_the_plotly_package_writes_figures_for():
    header = PLOTLY_BUNDLE.read_text()[:200]
    assert f"plotly.js v{get_plotlyjs_version()}," in header
    assert "Licensed under the MIT license" in header


def test_the_admin_links_to_the_pages_and_the_pages_link_to_the_admin_for_staff(
    client, alice, django_user_model
):
    staff = django_user_model.objects.create_superuser("root", password="root-password")
    study = make_study(alice, objective="sphere", search_space={})
    run_trials_for_sphere(study)
    job = do_start_job(study, alice, n_trials=2)
    trial = study.trials.first()
    client.force_login(staff)
    for admin_url, page_url in [
        (reverse("admin:studies_study_changelist"), study.get_absolute_url()),
        (reverse("admin:studies_trial_changelist"), trial.get_absolute_url()),
        (reverse("admin:studies_job_changelist"), study.get_absolute_url()),
    ]:
        assert page_url in client.get(admin_url).content.decode(), admin_url
    page = client.get(study.get_absolute_url()).content.decode()
    assert reverse("admin:studies_study_change", args=[study.pk]) in page
    assert reverse("admin:studies_job_change", args=[job.pk]) in page
    trial_page = client.get(trial.get_absolute_url()).content.decode()
    assert reverse("admin:studies_trial_change", args=[trial.pk]) in trial_page
    client.force_login(alice)
    page = client.get(study.get_absolute_url()).content.decode()
    assert "/admin/" not in page


def run_trials_for_sphere(study: Study) -> None:
    optuna_study_for(study).optimize(lambda t: t.suggest_float("x0", -1, 1) ** 2, n_trials=2)


def test_values_are_formatted_for_people():
    assert fmt_value(None) == "—"
    assert fmt_value(math.inf) == "∞" and fmt_value(-math.inf) == "−∞"
    assert fmt_value(math.nan) == "NaN"
    assert fmt_value(0.123456789) == "0.123457"
    assert fmt_duration(3.456) == "3.46 s"
    assert fmt_duration(125) == "2 min 5 s"
    assert fmt_duration(7300) == "2 h 1 min"


def test_a_search_space_with_several_conditions_per_row_is_kept_when_editing(logged_in, alice):
    space = {
        "a": {"type": "categorical", "choices": ["x", "y"]},
        "b": {"type": "int", "low": 1, "high": 3},
        "c": {"type": "float", "low": 0.0, "high": 1.0, "when": {"a": ["x"], "b": [1, 2]}},
    }
    study = make_study(alice, search_space=space)
    page = logged_in.get(reverse("studies:study_edit", args=[study.pk]))
    assert page.context["params"] is None
    assert "edit it through the API" in page.content.decode()
    data = {"name": "still-here", "sampler": "random", "pruner": "median", "objective": ""}
    response = logged_in.post(reverse("studies:study_edit", args=[study.pk]), data)
    assert response.status_code == 302
    study.refresh_from_db()
    assert study.name == "still-here"
    assert study.search_space == space
