"""Run the job watchdog once: restart jobs whose workers died, fail hopeless ones.

The workers run the same check every minute (a django-q2 schedule) and while
they run jobs; this command is for cron, operations, and clusters that are down.
"""

from django.core.management.base import BaseCommand

from studies.jobs.tasks import check_jobs


class Command(BaseCommand):
    help = "Restart jobs whose workers died or whose tasks got lost; fail hopeless ones."

    def handle(self, *args: object, **options: object) -> None:
        actions = check_jobs()
        for line in actions:
            self.stdout.write(line)
        if not actions:
            self.stdout.write("All jobs are healthy.")
