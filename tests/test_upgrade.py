"""A database made by an earlier hub migrates forward with all its data, and its tokens work.

The earlier hub is a commit from the repository's history (CI runs from a git
clone), unpacked with `git archive` and run with its own code: it migrates a new
SQLite file and fills it through its own API (Optuna on its DjangoStorage, its
do_start_job, its ApiToken.issue). The current code then migrates the same file
and must read every row as it was written.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BASE_DIR, REQUIRE_SERVICES

pytestmark = pytest.mark.slow

# The newest commit with migration 0005 (job stopping rules): the upgrade crosses
# 0006 (remote calls), 0007 (trial summaries, filled from the trials) and 0008
# (teams, private studies, scoped tokens).
OLD_COMMIT = "566f9775ec4767ee1b97d12bce3acf84e3df881b"

# What either version reads back, through its own models and Optuna.
SNAPSHOT = """
import json, optuna
from django.contrib.auth import get_user_model
from studies.models import ApiToken, Job, JobSlot, Study, Trial
from studies.storage import DjangoStorage

def rows(model):
    return list(model.objects.order_by("pk").values())

def optuna_view(name):
    study = optuna.load_study(study_name=name, storage=DjangoStorage())
    return [
        [t.number, t.state.name, t.params, t.values, t.intermediate_values, t.user_attrs]
        for t in study.trials
    ]

snapshot = {
    "users": list(get_user_model().objects.order_by("pk").values(
        "id", "username", "password", "is_staff", "is_active"
    )),
    "studies": rows(Study),
    "trials": rows(Trial),
    "jobs": rows(Job),
    "slots": rows(JobSlot),
    "tokens": rows(ApiToken),
    "optuna": {name: optuna_view(name) for name in ("old-sphere", "old-multi")},
}
"""

FILL = """
import optuna
from django.contrib.auth import get_user_model
from studies.actions import do_start_job
from studies.models import ApiToken, Study
from studies.storage import DjangoStorage

optuna.logging.set_verbosity(optuna.logging.WARNING)
users = get_user_model().objects
alice = users.create_user("alice", password="alice-password")
bob = users.create_user("bob", password="bob-password", is_staff=True)

def objective(trial):
    x = trial.suggest_float("x", -5, 5)
    n = trial.suggest_int("n", 1, 9, log=True)
    kind = trial.suggest_categorical("kind", ["a", "b", None])
    trial.set_user_attr("kind", kind)
    for step in range(3):
        trial.report(x * step, step)
    if trial.number == 3:
        raise optuna.TrialPruned()
    if trial.number == 5:
        raise ValueError("a failed trial")
    return x * x + n

storage = DjangoStorage()
sampler = optuna.samplers.RandomSampler(seed=1)
sphere = optuna.create_study(study_name="old-sphere", storage=storage, sampler=sampler)
sphere.set_user_attr("purpose", "upgrade test")
sphere.optimize(objective, n_trials=12, catch=(ValueError,))
sphere.enqueue_trial({"x": 1.0, "n": 2, "kind": "a"})  # one waiting trial
multi = optuna.create_study(
    study_name="old-multi", storage=storage, directions=["minimize", "maximize"]
)
multi.optimize(lambda t: (t.suggest_float("a", 0, 1), t.suggest_float("b", 0, 1)), n_trials=5)
Study.objects.filter(name="old-sphere").update(owner=alice, objective="sphere")
Study.objects.filter(name="old-multi").update(owner=bob)
do_start_job(Study.objects.get(name="old-sphere"), alice, n_trials=7, concurrency=2)
_, key = ApiToken.issue(alice, "laptop", 30)
revoked, revoked_key = ApiToken.issue(bob, "old script")
revoked.revoke()
"""

# The current code, after its migrate: the old keys against its API.
CHECK_TOKENS = """
from django.test import Client
client = Client(HTTP_HOST="localhost")
def names(key):
    response = client.get("/api/studies/", HTTP_AUTHORIZATION=f"Token {key}")
    body = response.json()
    return [response.status_code, sorted(s["name"] for s in body.get("results", []))]
snapshot["auth"] = {"alice": names(KEYS[0]), "revoked": names(KEYS[1])[0]}
"""


def old_tree(tmp_path: Path) -> Path:
    """The earlier hub's files, or a skip (a failure under HUB_REQUIRE_SERVICES) saying why."""
    reason = None
    git = shutil.which("git")
    if git is None:
        reason = "git is not installed"
    else:
        found = subprocess.run(
            [git, "-C", str(BASE_DIR), "cat-file", "-e", f"{OLD_COMMIT}^{{commit}}"],
            capture_output=True,
        )
        if found.returncode != 0:
            reason = f"commit {OLD_COMMIT[:7]} is not in this checkout (a shallow clone?)"
    if reason:
        if REQUIRE_SERVICES:
            pytest.fail(f"{reason} and HUB_REQUIRE_SERVICES=1")
        pytest.skip(reason)
    tree = tmp_path / "old"
    tree.mkdir()
    archive = subprocess.run(
        [git, "-C", str(BASE_DIR), "archive", OLD_COMMIT], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def run_manage(tree: Path, database: Path, *args: str) -> str:
    """Run ``manage.py`` of ``tree`` (its own code, this venv's Python) on ``database``."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DATABASE_URL")}
    env |= {
        "DATABASE_URL": f"sqlite:///{database}",
        "DJANGO_SETTINGS_MODULE": "optuna_hub.settings",
        "HUB_NO_BOOTSTRAP": "1",  # both manage.py bootstrap a virtualenv otherwise
        "HUB_VAR_DIR": str(database.parent / "var"),
        "LOG_LEVEL": "WARNING",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"{tree} manage.py {args[0]}: {result.stderr[-3000:]}"
    return result.stdout


def snapshot(tree: Path, database: Path, first: str = "", then: str = "") -> dict[str, Any]:
    """Run ``first``, take the snapshot, run ``then`` (which may add to it); return it."""
    script = first + SNAPSHOT + then + '\nprint("RESULT " + json.dumps(snapshot, default=str))\n'
    out = run_manage(tree, database, "shell", "-c", script)
    return json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])


def same_columns(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``new`` rows cut to the columns the old version had."""
    return [{key: row[key] for key in before} for before, row in zip(old, new, strict=True)]


def test_a_database_of_an_earlier_hub_migrates_with_every_row_and_token_intact(tmp_path):
    old = old_tree(tmp_path)
    database = tmp_path / "hub.sqlite3"
    run_manage(old, database, "migrate", "--no-input")
    before = snapshot(old, database, FILL, 'snapshot["keys"] = [key, revoked_key]\n')
    assert len(before["trials"]) == 18 and len(before["jobs"]) == 1 and len(before["tokens"]) == 2

    out = run_manage(BASE_DIR, database, "migrate", "--no-input")
    assert "Applying studies.0008_teams_audit... OK" in out
    after = snapshot(BASE_DIR, database, f"KEYS = {before['keys']!r}\n", CHECK_TOKENS)

    for table in ("users", "studies", "trials", "jobs", "slots", "tokens"):
        assert same_columns(before[table], after[table]) == before[table], table
    assert after["optuna"] == before["optuna"]
    # What the migrations promise for what the old version did not have.
    for study in after["studies"]:
        trials = [t for t in after["trials"] if t["study_id"] == study["id"]]
        complete = [t["value"] for t in trials if t["state"] == 1]
        assert (study["visibility"], study["team_id"]) == ("internal", None)
        assert (study["n_trials"], study["n_complete"]) == (len(trials), len(complete))
    sphere = next(s for s in after["studies"] if s["name"] == "old-sphere")
    values = [
        t["value"] for t in after["trials"] if t["study_id"] == sphere["id"] and t["state"] == 1
    ]
    assert sphere["best_value"] == min(values)
    assert [(t["scope"], t["team_id"]) for t in after["tokens"]] == [("write", None)] * 2
    assert after["auth"] == {"alice": [200, ["old-multi", "old-sphere"]], "revoked": 401}
