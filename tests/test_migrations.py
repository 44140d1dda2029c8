"""Migrations that rewrite data keep every row and fill what they add."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE_SUMMARIES = [("studies", "0006_remote_call")]
SUMMARIES = [("studies", "0007_trial_summaries")]


def migrate(targets: list[tuple[str, str]]) -> object:
    """Migrate the test database to ``targets``; the apps as they were there."""
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    executor.loader.build_graph()
    return executor.loader.project_state(targets).apps


@pytest.fixture
def back_to_latest():
    """Leave the test database at the latest migrations, whatever the test did."""
    yield
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("back_to_latest")
def test_trial_summaries_are_filled_from_the_trials_already_stored():
    apps = migrate(BEFORE_SUMMARIES)
    Study, Trial = apps.get_model("studies", "Study"), apps.get_model("studies", "Trial")
    start = datetime(2026, 5, 1, tzinfo=UTC)
    kept = Study.objects.create(name="kept", directions=["maximize"])
    two = Study.objects.create(name="two", directions=["minimize", "minimize"])
    Study.objects.create(name="empty", directions=["minimize"])
    rows = [
        # (study, number, state, values, seconds)
        (kept, 0, 1, [2.5], 1.25),
        (kept, 1, 1, [7.0], 0.000001),
        (kept, 2, 2, None, 3.0),
        (kept, 3, 3, None, 4.5),
        (kept, 4, 0, None, None),
        (kept, 5, 4, None, None),
        (two, 0, 1, [1.0, 2.0], 2.0),
    ]
    for study, number, state, values, seconds in rows:
        Trial.objects.create(
            study=study,
            number=number,
            state=state,
            values=values,
            value=values[0] if values else None,
            params={"x": 0.5},
            distributions={},
            datetime_start=None if state == 4 else start + timedelta(minutes=number),
            datetime_complete=(
                None if seconds is None else start + timedelta(minutes=number, seconds=seconds)
            ),
        )

    apps = migrate(SUMMARIES)
    Study, Trial = apps.get_model("studies", "Study"), apps.get_model("studies", "Trial")
    kept = Study.objects.get(name="kept")
    assert (kept.n_trials, kept.n_running, kept.n_waiting) == (6, 1, 1)
    assert (kept.n_complete, kept.n_pruned, kept.n_fail) == (2, 1, 1)
    assert kept.best_value == 7.0
    assert kept.last_activity == start + timedelta(minutes=4)  # trial 4 started last
    elapsed = dict(Trial.objects.filter(study=kept).values_list("number", "elapsed"))
    assert elapsed == {0: 1.25, 1: 0.000001, 2: 3.0, 3: 4.5, 4: None, 5: None}
    two = Study.objects.get(name="two")
    assert (two.n_trials, two.n_complete, two.best_value) == (1, 1, None)
    empty = Study.objects.get(name="empty")
    assert (empty.n_trials, empty.best_value, empty.last_activity) == (0, None, None)
    assert Trial.objects.count() == len(rows)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("back_to_latest")
def test_studies_stored_before_teams_stay_internal_and_their_owners(settings, django_user_model):
    settings.HUB_DEFAULT_VISIBILITY = "private"  # for new studies only
    apps = migrate(SUMMARIES)
    owner = apps.get_model("auth", "User").objects.create(username="old-owner")
    apps.get_model("studies", "Study").objects.create(
        name="old", directions=["minimize"], owner=owner
    )
    apps = migrate([("studies", "0008_teams_audit")])
    old = apps.get_model("studies", "Study").objects.get(name="old")
    assert (old.visibility, old.team_id, old.owner_id) == ("internal", None, owner.pk)
