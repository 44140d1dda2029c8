"""Optuna's own storage test suite, against HubStorage talking to a running hub.

Run by the hub's tests (tests/test_remote_storage.py) in a virtualenv that has
this client but not Django, with OPTUNA_HUB_URL and OPTUNA_HUB_TOKEN naming a
live hub whose studies the token's user may delete: each test starts from a
hub without studies, as the suite expects.
"""

from __future__ import annotations

import pytest
from optuna.testing.pytest_storages import StorageTestCase

from optuna_hub_client import HubStorage


@pytest.fixture
def storage() -> HubStorage:
    storage = HubStorage()
    for study in storage.get_all_studies():
        storage.delete_study(study._study_id)
    return storage


class TestHubStorage(StorageTestCase):
    pass
