from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from studies.storage import DjangoStorage
from studies.transfer import copy_study, open_storage


class Command(BaseCommand):
    help = "Copy a hub study to any Optuna storage URL."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("study", help="name of the study in the hub")
        parser.add_argument("url", help="sqlite:///path, postgresql://..., or journal:///path")
        parser.add_argument("--as", dest="new_name", help="name in the destination")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        hub = DjangoStorage()
        try:
            hub.get_study_id_from_name(options["study"])
        except KeyError:
            raise CommandError(f"no study named {options['study']!r} in the hub") from None
        destination = open_storage(options["url"], must_exist=False)
        new_name = options["new_name"] or options["study"]
        try:
            study = copy_study(
                hub, options["study"], destination, new_name, not options["no_progress"]
            )
        except CommandError:
            raise
        except Exception as e:
            # Another storage cannot join our transaction: undo the partial copy.
            try:
                destination.delete_study(destination.get_study_id_from_name(new_name))
            except KeyError:
                pass
            raise CommandError(f"export failed and was undone: {e}") from None
        n = len(study.get_trials(deepcopy=False))
        self.stdout.write(f"Exported {options['study']!r} as {new_name!r} ({n} trials).")
