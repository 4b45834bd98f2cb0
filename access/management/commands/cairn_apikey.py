from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from access.models import User
from access.services import SYSTEM, api_key_create


class Command(BaseCommand):
    help = "Create an API key for a user; the secret is printed once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", required=True)
        parser.add_argument("--name", default="cli")
        parser.add_argument("--create-user", action="store_true", help="create the user if missing")

    def handle(self, *args: Any, **options: Any) -> None:
        user = User.objects.filter(username=options["user"]).first()
        if user is None:
            if not options["create_user"]:
                raise CommandError(f"No user named {options['user']!r}")
            user = User.objects.create_user(username=options["user"])
        _, secret = api_key_create(user=user, name=options["name"], actor=SYSTEM)
        self.stdout.write(secret)
