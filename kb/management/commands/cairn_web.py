"""Team shape: the web process only (Celery workers do the rest)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Run the web app (no background worker): the team shape's web process."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--workers", type=int, default=2)
        parser.add_argument("--log-level", default="info")

    def handle(self, *args: object, **options: Any) -> None:
        import uvicorn

        uvicorn.run("config.asgi:application", host=str(options["host"]), port=int(options["port"]),
                    workers=int(options["workers"]), log_level=str(options["log_level"]),
                    lifespan="off", access_log=False,
                    # The socket peer, unchanged: Django believes forwarding headers from CAIRN_TRUSTED_PROXIES only.
                    proxy_headers=False, forwarded_allow_ips="")
