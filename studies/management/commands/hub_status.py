"""`manage.py hub_status`: the checks of /readyz for a shell; exit code 1 unless all pass."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand

from studies.ops.health import readiness


class Command(BaseCommand):
    help = "Check the database, migrations, broker and worker clusters; exit 1 unless all are ok."

    def handle(self, *args: Any, **options: Any) -> None:
        checks = readiness()
        width = max(len(check.name) for check in checks)
        for check in checks:
            mark = self.style.SUCCESS("ok  ") if check.ok else self.style.ERROR("FAIL")
            self.stdout.write(f"{check.name:<{width}}  {mark}  {check.detail}")
        if all(check.ok for check in checks):
            self.stdout.write("ready")
        else:
            self.stdout.write("not ready")
            sys.exit(1)
