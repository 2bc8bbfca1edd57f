from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from agents.services import token_issue, user_create
from workspace.errors import ServiceError


class Command(BaseCommand):
    help = "Create a human account and print a personal API token (shown once)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("name")
        parser.add_argument("--email", default="")
        parser.add_argument("--password", default=None, help="Set a password for signing in in the browser.")
        parser.add_argument("--admin", action="store_true", help="Make the account a Django admin (operator).")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            user = user_create(username=options["name"], email=options["email"], password=options["password"],
                               is_staff=options["admin"], is_superuser=options["admin"])
        except ServiceError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(token_issue(user=user, name="initial").secret)
