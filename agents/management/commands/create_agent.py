from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from agents.models import User
from agents.services import agent_create
from workspace.errors import ServiceError


class Command(BaseCommand):
    help = "Create an agent account and print its API token (shown once)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("name")
        parser.add_argument("--created-by", help="Username of the human this agent acts for.")

    def handle(self, *args: Any, **options: Any) -> None:
        owner = None
        if options["created_by"]:
            owner = User.objects.filter(username=options["created_by"], kind=User.Kind.HUMAN).first()
            if owner is None:
                raise CommandError(f"No human account named {options['created_by']!r}.")
        try:
            issued = agent_create(name=options["name"], created_by=owner)
        except ServiceError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(issued.secret)
