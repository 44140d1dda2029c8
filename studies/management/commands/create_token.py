"""Create an API token for a user and print its key (the only time it is shown).

    python3 manage.py create_token alice --name laptop --expires-days 90

The key alone goes to standard output, so ``TOKEN=$(python3 manage.py create_token alice)``
works; it is listed (by prefix) and revocable on the user's /tokens/ page.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from studies.models import ApiToken
from studies.models.token import MAX_EXPIRY_DAYS, MAX_NAME_LENGTH, token_limit_error


class Command(BaseCommand):
    help = "Create an API token for a user and print its key."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="command line", help="what the token is for")
        parser.add_argument(
            "--expires-days",
            type=int,
            default=None,
            help=f"days until it stops working (1 to {MAX_EXPIRY_DAYS}; default: never)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        users = get_user_model()
        try:
            user = users.objects.get_by_natural_key(options["username"])
        except users.DoesNotExist:
            raise CommandError(f"no user named {options['username']!r}") from None
        name, days = options["name"].strip(), options["expires_days"]
        if not name or len(name) > MAX_NAME_LENGTH:
            raise CommandError(f"--name must be 1 to {MAX_NAME_LENGTH} characters")
        if days is not None and not 1 <= days <= MAX_EXPIRY_DAYS:
            raise CommandError(f"--expires-days must be between 1 and {MAX_EXPIRY_DAYS}")
        if error := token_limit_error(user):
            raise CommandError(error)
        _, key = ApiToken.issue(user, name, days)
        self.stdout.write(key)
