"""Write a consistent copy of the hub's database while the hub runs.

    python3 manage.py backup /backups/hub-2026-05-01.sqlite3       # SQLite
    python3 manage.py backup /backups/hub-2026-05-01.dump          # PostgreSQL (pg_dump -Fc)

Jobs keep writing trials meanwhile; the copy holds every trial committed before
it began (studies/ops/backup.py says how). It is written beside PATH and renamed
into place, so a failed backup leaves no partial file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from studies.ops.backup import BackupError, backup


class Command(BaseCommand):
    help = (
        "Copy the hub's database to PATH while the hub runs (SQLite: online backup; "
        "PostgreSQL: pg_dump -Fc, which must be on PATH)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path, help="the backup file to write")
        parser.add_argument("--force", action="store_true", help="replace PATH if it exists")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            written = backup(options["path"], force=options["force"])
        except BackupError as e:
            raise CommandError(str(e)) from None
        self.stdout.write(written.summary())
