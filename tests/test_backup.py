"""`manage.py backup` while a job writes trials, and `manage.py restore` onto an empty database.

The file runs on the test run's database (SQLite by default), and again on
PostgreSQL from the last test, which runs it in a pytest subprocess with
DATABASE_URL set. The restored database is always a new one (a new SQLite file,
a scratch PostgreSQL database), read by hub processes started on it.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from optuna.trial import TrialState

from studies.actions import do_cancel_job, do_start_job
from studies.models import Job, Study, Trial
from tests.conftest import (
    BASE_DIR,
    PYTHON,
    REQUIRE_SERVICES,
    run_suite_elsewhere,
    subprocess_env,
    token_for,
    wait_for,
)
from tests.test_jobs_workers import WORKER_ENV

FINISHED = [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]
TRIAL_FIELDS = ["id", "study_id", "number", "state", "params", "values", "datetime_complete"]
# Run by `manage.py shell` on the restored database: what a user of that hub would see.
READ_BACK = """
import json, optuna
from django.contrib.auth import get_user_model
from django.test import Client
from studies.models import Job, Trial
from studies.storage import DjangoStorage
study_id, study_name, key = {study_id}, {study_name!r}, {key!r}
def plain(row):
    done = row["datetime_complete"]
    return {{**row, "datetime_complete": done and done.isoformat()}}
rows = [plain(row) for row in Trial.objects.values(*{fields!r})]
client = Client(HTTP_HOST="localhost")
api = client.get(f"/api/studies/{{study_id}}/", HTTP_AUTHORIZATION=f"Token {{key}}")
client.force_login(get_user_model().objects.get(username="alice"))
page = client.get(f"/studies/{{study_id}}/")
optuna_trials = len(optuna.load_study(study_name=study_name, storage=DjangoStorage()).trials)
print("RESULT " + json.dumps({{
    "trials": rows,
    "api": [api.status_code, api.json().get("name")],
    "page": [page.status_code, study_name in page.content.decode()],
    "optuna_trials": optuna_trials,
    "jobs": list(Job.objects.values_list("id", flat=True)),
}}))
"""


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "manage.py", *args],
        cwd=BASE_DIR,
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def backup_name(tmp_path: Path) -> Path:
    return tmp_path / ("hub.sqlite3" if connection.vendor == "sqlite" else "hub.dump")


def psql(sql: str) -> None:
    db = connection.settings_dict
    argv = [shutil.which("psql") or "psql", "-h", db["HOST"], "-p", str(db["PORT"] or 5432)]
    argv += ["-U", db["USER"], "-d", "postgres", "-qc", sql]
    env = {**os.environ, "PGPASSWORD": db["PASSWORD"] or ""}
    subprocess.run(argv, env=env, check=True, capture_output=True, timeout=60)


@pytest.fixture
def empty_database(tmp_path: Path) -> Iterator[str]:
    """The URL of a new database of the run's kind, to restore onto."""
    if connection.vendor == "sqlite":
        yield f"sqlite:///{tmp_path / 'restored.sqlite3'}"
        return
    if shutil.which("psql") is None:
        pytest.fail("psql is needed to make a scratch PostgreSQL database")
    db = connection.settings_dict
    name = f"hub_restore_{os.getpid()}"
    psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    psql(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://{db['USER']}@{db['HOST']}:{db['PORT'] or 5432}/{name}"
    finally:
        psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def finished_trials(study: Study) -> set[int]:
    return set(Trial.objects.filter(study=study, state__in=FINISHED).values_list("id", flat=True))


def read_back(url: str, study: Study, key: str) -> dict[str, Any]:
    script = READ_BACK.format(
        study_id=study.pk, study_name=study.name, key=key, fields=TRIAL_FIELDS
    )
    result = manage("shell", "-c", script, DATABASE_URL=url)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def plain(row: dict[str, Any]) -> dict[str, Any]:
    done = row["datetime_complete"]
    return {**row, "datetime_complete": done and done.isoformat()}


def source_rows(ids: list[int]) -> dict[int, dict[str, Any]]:
    return {row["id"]: plain(row) for row in Trial.objects.filter(id__in=ids).values(*TRIAL_FIELDS)}


@pytest.mark.slow
def test_a_backup_taken_while_a_job_writes_trials_restores_every_trial_it_holds(
    start_qcluster, alice, tmp_path, empty_database
):
    start_qcluster(**WORKER_ENV)
    study = Study.objects.create(
        name="busy",
        owner=alice,
        directions=["minimize"],
        objective="sphere",
        sampler={"type": "random", "options": {}, "seed": 0},
    )
    key = token_for(alice)
    # More trials than the test waits for: it cancels the job once the backup is made.
    job = do_start_job(study, alice, n_trials=100_000, concurrency=2)
    wait_for(lambda: len(finished_trials(study)) >= 20, 60, "the job to write 20 trials")

    before = finished_trials(study)
    path = backup_name(tmp_path)
    made = manage("backup", str(path))
    after = finished_trials(study)
    job.refresh_from_db()
    assert made.returncode == 0, made.stderr
    assert job.status == Job.RUNNING and len(after) > len(before)  # written during the backup
    do_cancel_job(job, alice)
    wait_for(lambda: not Job.objects.get(pk=job.pk).is_active, 30, "the job to stop")
    job.refresh_from_db()
    assert (job.status, job.error, job.n_failed) == (Job.CANCELLED, "", 0)

    restored = manage("restore", str(path), DATABASE_URL=empty_database)
    assert restored.returncode == 0, restored.stderr
    hub = read_back(empty_database, study, key)
    rows = {row["id"]: row for row in hub["trials"]}
    done = {i for i, row in rows.items() if row["state"] in FINISHED}
    # Every trial finished before the backup began, and none finished after it ended.
    assert before <= done <= after
    assert f" {len(rows)} trials)" in made.stdout
    # Finished trials are immutable: each is the source's row, field for field.
    source = source_rows(list(rows))
    assert {i: rows[i] for i in done} == {i: source[i] for i in done}
    for i in rows.keys() - done:  # running at backup time: the same trial, its params so far
        assert rows[i]["state"] == TrialState.RUNNING
        assert (rows[i]["number"], rows[i]["study_id"]) == (source[i]["number"], study.pk)
        assert rows[i]["params"].items() <= source[i]["params"].items()
    assert hub["api"] == [200, "busy"]
    assert hub["page"] == [200, True]
    assert hub["optuna_trials"] == len(rows)
    assert hub["jobs"] == [job.pk]


@pytest.mark.django_db(transaction=True)
def test_a_backup_is_not_written_over_an_existing_file_without_force(alice, tmp_path):
    path = backup_name(tmp_path)
    path.write_text("keep me")
    with pytest.raises(CommandError, match="exists: choose another name"):
        call_command("backup", str(path))
    assert path.read_text() == "keep me"
    call_command("backup", str(path), "--force")
    assert path.read_bytes()[:5] in (b"SQLit", b"PGDMP")
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no draft left behind
    assert path.stat().st_mode & 0o077 == 0  # password and token hashes: owner only


@pytest.mark.django_db
def test_a_backup_never_replaces_the_database_itself():
    if connection.vendor != "sqlite":
        pytest.skip("a SQLite database is a file")
    with pytest.raises(CommandError, match="the hub's database itself"):
        call_command("backup", connection.settings_dict["NAME"], "--force")


@pytest.mark.django_db
def test_a_backup_into_a_missing_directory_says_so(tmp_path):
    with pytest.raises(CommandError, match="no directory"):
        call_command("backup", str(tmp_path / "nowhere" / "hub.bak"))


@pytest.mark.django_db(transaction=True)
def test_a_restore_onto_a_database_with_hub_data_is_refused(alice, tmp_path):
    path = backup_name(tmp_path)
    call_command("backup", str(path))
    with pytest.raises(CommandError, match=r"already holds hub data \(1 users\)"):
        call_command("restore", str(path))


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a hub backup"),
        (b"SQLite format 3\x00" + b"\x00" * 200, "cannot be read as a SQLite|is a SQLite backup"),
        (b"PGDMP" + os.urandom(200), "not a readable pg_dump archive|is a PostgreSQL backup"),
        (os.urandom(4096), "not a hub backup"),
    ],
)
def test_a_restore_of_a_file_that_is_not_a_backup_writes_nothing(tmp_path, content, message):
    path = tmp_path / "backup"
    path.write_bytes(content)
    with pytest.raises(CommandError, match=message):
        call_command("restore", str(path))
    with pytest.raises(CommandError, match="no backup file at"):
        call_command("restore", str(tmp_path / "missing"))


@pytest.mark.django_db
def test_a_restore_of_another_sqlite_database_is_refused(tmp_path):
    path = tmp_path / "notes.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (text)")
    kind = "SQLite" if connection.vendor == "sqlite" else "PostgreSQL"
    with pytest.raises(CommandError, match=f"not an Optuna Hub's|this hub's database is {kind}"):
        call_command("restore", str(path))


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_refusals_are_one_line_and_a_non_zero_exit(alice, tmp_path, empty_database):
    path = backup_name(tmp_path)
    call_command("backup", str(path))
    garbage = tmp_path / "garbage"
    garbage.write_bytes(os.urandom(1000))
    refused = [
        manage("backup", str(path)),  # exists
        manage("restore", str(path)),  # onto this database, which has alice
        manage("restore", str(garbage), DATABASE_URL=empty_database),
    ]
    for result in refused:
        assert result.returncode != 0
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith("CommandError: ")
    assert "already holds hub data" in refused[1].stderr
    if connection.vendor == "sqlite":  # a hub process (here, a connection) has the file open
        target = Path(empty_database.removeprefix("sqlite:///"))
        held = sqlite3.connect(target)
        held.execute("PRAGMA journal_mode=WAL")
        held.execute("CREATE TABLE notes (text)")  # as a hub process, it has read the file
        held.commit()
        busy = manage("restore", str(path), DATABASE_URL=empty_database)
        held.close()
        assert busy.returncode != 0 and "in use by another process" in busy.stderr, busy.stderr
    # The empty database stayed empty: it still takes the real backup.
    restored = manage("restore", str(path), DATABASE_URL=empty_database)
    assert restored.returncode == 0, restored.stderr
    assert "(0 studies, 0 trials)" in restored.stdout


@pytest.mark.slow
def test_backups_and_restores_pass_on_postgresql(postgres_url):
    if connection.vendor == "postgresql":
        pytest.skip("this run is on PostgreSQL already")
    missing = [tool for tool in ("pg_dump", "pg_restore", "psql") if shutil.which(tool) is None]
    if missing:
        message = f"{', '.join(missing)} not on PATH"
        if REQUIRE_SERVICES:
            pytest.fail(f"{message} and HUB_REQUIRE_SERVICES=1")
        pytest.skip(message)
    summary = run_suite_elsewhere(
        [__file__, "-k", "not on_postgresql and not database_itself"], DATABASE_URL=postgres_url
    )
    assert "10 passed" in summary, summary
