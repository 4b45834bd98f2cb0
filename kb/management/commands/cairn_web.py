"""Team shape: the web process only (Celery workers do the rest)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Run the web app (no background worker): the team shape's web process."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--workers", type=int, default=2)
        parser.add_argument("--log-level", default="info")

    def execute(self, *args: Any, **options: Any) -> str | None:
        # Before the system checks: they import the URLs, and with them FAISS, whose OpenMP reads its thread
        # count once, as it loads (kb.serving.limit_query_threads); the workers inherit the environment.
        from kb.serving import limit_query_threads

        limit_query_threads()
        return super().execute(*args, **options)

    def handle(self, *args: object, **options: Any) -> None:
        import uvicorn

        from kb import serving

        host, port, workers = str(options["host"]), int(options["port"]), int(options["workers"])
        if workers < 1:
            raise CommandError("--workers must be at least 1")
        from kb.metrics import multiprocess_reset

        multiprocess_reset()  # the previous server's processes are gone: their counts start again
        uvicorn_options: dict[str, Any] = {
            "log_level": str(options["log_level"]), "lifespan": "off", "access_log": False,
            "log_config": None,  # uvicorn's lines go through Cairn's handler and format (CAIRN_LOG_FORMAT)
            # The socket peer, unchanged: Django believes forwarding headers from CAIRN_TRUSTED_PROXIES only.
            "proxy_headers": False, "forwarded_allow_ips": "",
        }
        if workers == 1:
            uvicorn.run("config.asgi:application", host=host, port=port, **uvicorn_options)
        else:
            # One listening socket per worker (SO_REUSEPORT): connections spread evenly; see kb/serving.py.
            serving.serve("config.asgi:application", host=host, port=port, workers=workers, **uvicorn_options)
