import sys

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run the test suite with pytest; every argument is passed to pytest (e.g. -q, -k)."

    def run_from_argv(self, argv: list[str]) -> None:
        import pytest

        sys.exit(pytest.main(argv[2:]))
