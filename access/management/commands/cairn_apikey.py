import datetime as dt
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from access.models import User
from access.services import SYSTEM, api_key_create


class Command(BaseCommand):
    help = "Create an API key for a user; the secret is printed once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", required=True)
        parser.add_argument("--name", default="cli")
        parser.add_argument("--create-user", action="store_true", help="create the user if missing")
        parser.add_argument("--read-only", action="store_true", help="the key can search and ask, not change anything")
        parser.add_argument("--collection", type=int, action="append", default=None, metavar="ID",
                            help="limit the key to this collection (repeat for several)")
        parser.add_argument("--expires-days", type=int, default=None, metavar="DAYS",
                            help="the key stops working after this many days")

    def handle(self, *args: Any, **options: Any) -> None:
        user = User.objects.filter(username=options["user"]).first()
        if user is None:
            if not options["create_user"]:
                raise CommandError(f"No user named {options['user']!r}")
            user = User.objects.create_user(username=options["user"])
        days = options["expires_days"]
        if days is not None and not 1 <= days <= 3650:
            raise CommandError("--expires-days must be between 1 and 3650")
        collections = options["collection"]
        if collections is not None and any(pk < 1 for pk in collections):
            raise CommandError("--collection takes a collection id (a positive number)")
        _, secret = api_key_create(
            user=user, name=options["name"], actor=SYSTEM, read_only=options["read_only"],
            collection_ids=sorted(set(collections)) if collections is not None else None,
            expires_at=timezone.now() + dt.timedelta(days=days) if days is not None else None,
        )
        self.stdout.write(secret)
