"""Optuna's own storage test suite, run in full against DjangoStorage."""

import pytest
from optuna.testing.pytest_storages import StorageTestCase

from studies.storage import DjangoStorage


@pytest.fixture
def storage(db) -> DjangoStorage:
    return DjangoStorage()


class TestDjangoStorage(StorageTestCase):
    pass
