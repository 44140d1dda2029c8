from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from studies.models import Study
from studies.storage import DjangoStorage
from studies.transfer import copy_study, open_storage


class Command(BaseCommand):
    help = "Copy a study from any Optuna storage URL into the hub."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("url", help="sqlite:///path, postgresql://..., or journal:///path")
        parser.add_argument("study", help="name of the study in that storage")
        parser.add_argument("--as", dest="new_name", help="name in the hub (default: the same)")
        parser.add_argument("--owner", help="username of the hub user who will own the study")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        owner = None
        if options["owner"]:
            owner = get_user_model().objects.filter(username=options["owner"]).first()
            if owner is None:
                raise CommandError(f"no hub user named {options['owner']!r}")
        source = open_storage(options["url"], must_exist=True)
        new_name = options["new_name"] or options["study"]
        # One transaction: a failure part-way leaves the hub as it was.
        try:
            with transaction.atomic():
                study = copy_study(
                    source, options["study"], DjangoStorage(), new_name, not options["no_progress"]
                )
                Study.objects.filter(pk=study._study_id).update(owner=owner)
        except CommandError:
            raise
        except Exception as e:
            raise CommandError(f"import failed, nothing was written: {e}") from None
        n = len(study.get_trials(deepcopy=False))
        self.stdout.write(f"Imported {options['study']!r} as {new_name!r} ({n} trials).")
