"""manage.py import_study / export_study round-trips, and their one-line errors."""

from __future__ import annotations

import math
import subprocess
import sys

import optuna
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from studies.models import Study, Trial
from studies.storage import DjangoStorage
from tests.conftest import BASE_DIR, subprocess_env
from tests.test_storage import comparable


def make_source(storage: str | optuna.storages.BaseStorage) -> optuna.Study:
    study = optuna.create_study(study_name="source", storage=storage, direction="maximize")
    study.set_user_attr("dataset", "digits")

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        trial.suggest_categorical("kind", ["a", None, 2])
        trial.report(math.inf, 0)
        trial.set_user_attr("tag", "t")
        return x if trial.number != 3 else math.inf

    study.optimize(objective, n_trials=8)
    study.enqueue_trial({"x": 0.5})
    return study


def test_import_then_export_changes_nothing(db, tmp_path, alice):
    source = make_source(f"sqlite:///{tmp_path / 'source.db'}")

    call_command(
        "import_study",
        f"sqlite:///{tmp_path / 'source.db'}",
        "source",
        "--owner",
        "alice",
        "--no-progress",
    )
    journal = f"journal:///{tmp_path / 'out.log'}"
    call_command("export_study", "source", journal, "--as", "copy", "--no-progress")

    hub = optuna.load_study(study_name="source", storage=DjangoStorage())
    back = optuna.load_study(
        study_name="copy",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(tmp_path / "out.log"))
        ),
    )
    expected = [comparable(t) for t in source.trials]
    assert [comparable(t) for t in hub.trials] == expected
    assert [comparable(t) for t in back.trials] == expected
    assert hub.user_attrs == back.user_attrs == {"dataset": "digits"}
    assert back.direction == optuna.study.StudyDirection.MAXIMIZE
    assert Study.objects.get(name="source").owner == alice


def test_export_to_postgresql_round_trips(db, tmp_path, postgres_url):
    import psycopg

    scratch = "hub_export_test"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {scratch} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {scratch}")
    target = postgres_url.rsplit("/", 1)[0] + f"/{scratch}"
    try:
        source = make_source(f"sqlite:///{tmp_path / 'source.db'}")
        call_command(
            "import_study", f"sqlite:///{tmp_path / 'source.db'}", "source", "--no-progress"
        )
        call_command(
            "export_study",
            "source",
            f"postgresql+psycopg://{target.split('://')[1]}",
            "--no-progress",
        )
        exported = optuna.load_study(
            study_name="source", storage=f"postgresql+psycopg://{target.split('://')[1]}"
        )
        assert [comparable(t) for t in exported.trials] == [comparable(t) for t in source.trials]
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {scratch} WITH (FORCE)")


def test_a_missing_study_writes_nothing(db, tmp_path):
    make_source(f"sqlite:///{tmp_path / 'source.db'}")
    with pytest.raises(CommandError, match="no study named 'nope'"):
        call_command("import_study", f"sqlite:///{tmp_path / 'source.db'}", "nope")
    assert not Study.objects.exists()


def test_a_name_clash_writes_nothing(db, tmp_path):
    make_source(f"sqlite:///{tmp_path / 'source.db'}")
    optuna.create_study(study_name="source", storage=DjangoStorage())
    with pytest.raises(CommandError, match="already exists"):
        call_command("import_study", f"sqlite:///{tmp_path / 'source.db'}", "source")
    assert Study.objects.count() == 1
    assert not Trial.objects.exists()


def test_a_failure_part_way_leaves_the_hub_as_it_was(db, tmp_path):
    path = tmp_path / "source.log"
    source = make_source(
        optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    )
    # The journal accepts what the hub refuses: "x" was a float in earlier
    # trials and is categorical in this last one, so the import fails at the end.
    odd = optuna.trial.create_trial(
        params={"x": 1},
        distributions={"x": optuna.distributions.CategoricalDistribution([1])},
        value=1.0,
    )
    source._storage.create_new_trial(source._study_id, template_trial=odd)

    with pytest.raises(CommandError, match="nothing was written"):
        call_command("import_study", f"journal:///{path}", "source", "--no-progress")
    assert not Study.objects.exists()
    assert not Trial.objects.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["import_study", "not-a-url", "s"], "is not a storage URL"),
        (["import_study", "sqlite:////nonexistent/x.db", "s"], "no SQLite file"),
        (["import_study", "journal:////nonexistent/x.log", "s"], "no journal file"),
        (["import_study", "mysql://nobody@127.0.0.1:1/x", "s"], "cannot open storage"),
        (["export_study", "missing", "sqlite:////tmp/x.db"], "no study named 'missing' in the hub"),
    ],
)
def test_bad_input_is_a_one_line_error_with_exit_code_1(transactional_db, args, message):
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
