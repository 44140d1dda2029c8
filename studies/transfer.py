"""Copy studies between the hub and any Optuna storage (import_study / export_study)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import optuna
from django.core.management.base import CommandError
from tqdm import tqdm

JOURNAL_SCHEME = "journal:///"


def open_storage(url: str, *, must_exist: bool) -> optuna.storages.BaseStorage:
    """An Optuna storage for an RDB URL (sqlite:///, postgresql://, ...) or journal:///path."""
    if url.startswith(JOURNAL_SCHEME):
        path = Path("/" + url.removeprefix(JOURNAL_SCHEME).lstrip("/"))
        if must_exist and not path.is_file():
            raise CommandError(f"no journal file at {path}")
        backend = optuna.storages.journal.JournalFileBackend(str(path))
        return optuna.storages.JournalStorage(backend)
    scheme = urlparse(url).scheme
    if not scheme or "://" not in url:
        raise CommandError(
            f"{url!r} is not a storage URL (sqlite:///path, postgresql://..., journal:///path)"
        )
    if must_exist and scheme == "sqlite":
        path = Path(url.removeprefix("sqlite:///"))
        if not path.is_file():
            raise CommandError(f"no SQLite file at {path}")
    try:
        return optuna.storages.RDBStorage(url, skip_compatibility_check=False)
    except Exception as e:  # SQLAlchemy and drivers raise many kinds; all mean "cannot open".
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CommandError(f"cannot open storage {url}: {reason}") from None


def copy_study(
    from_storage: optuna.storages.BaseStorage,
    name: str,
    to_storage: optuna.storages.BaseStorage,
    new_name: str,
    progress: bool = True,
) -> optuna.Study:
    """Copy study ``name`` with every trial and attribute; the caller makes it atomic."""
    try:
        source = optuna.load_study(study_name=name, storage=from_storage)
    except KeyError:
        raise CommandError(f"no study named {name!r} in the source storage") from None
    if new_name in {s.study_name for s in to_storage.get_all_studies()}:
        raise CommandError(f"a study named {new_name!r} already exists in the destination")
    target = optuna.create_study(
        study_name=new_name, storage=to_storage, directions=source.directions
    )
    for key, value in from_storage.get_study_system_attrs(source._study_id).items():
        to_storage.set_study_system_attr(target._study_id, key, value)
    for key, value in source.user_attrs.items():
        target.set_user_attr(key, value)
    trials = source.get_trials(deepcopy=False)
    for trial in tqdm(trials, desc=f"copying {name}", unit="trial", disable=not progress):
        to_storage.create_new_trial(target._study_id, template_trial=trial)
    return target
