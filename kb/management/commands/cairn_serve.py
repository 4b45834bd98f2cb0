"""Personal mode in the foreground: web app + background worker in one process."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Run Cairn (web app and, in personal mode, its background worker) in the foreground."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-migrate", action="store_true", help="do not apply migrations first")
        parser.add_argument("--log-level", default="info")

    def handle(self, *args: object, **options: Any) -> None:
        import uvicorn

        host = str(options["host"])
        port = int(options["port"])
        if not 0 < port < 65536:
            raise CommandError("--port must be between 1 and 65535")
        if settings.CAIRN_MODE == "personal" and not _loopback(host):
            self.stderr.write(
                "warning: personal mode signs in loopback clients only; others will be asked to log in "
                "and there is no password. Use team mode to serve a network."
            )
        from kb.metrics import multiprocess_reset

        multiprocess_reset()  # the previous server's counts start again
        if not options["no_migrate"]:
            call_command("migrate", interactive=False, verbosity=0)
        from access.services import personal_user

        if settings.CAIRN_MODE == "personal":
            personal_user()
        if settings.CAIRN_TASKS == "local":
            from ingestion.api import local_worker

            local_worker().start()
        if settings.CAIRN_TASKS != "celery" and settings.CAIRN_LLM_BACKEND != "extractive":
            # Load the language model now, in the background, so the first question does not wait for it.
            import threading

            from kb.answering import local_pool

            threading.Thread(target=_warm_generation_pool, args=(local_pool,), name="cairn-model-load",
                             daemon=True).start()
        self.stdout.write(
            f"Cairn ({settings.CAIRN_MODE} mode, tasks: {settings.CAIRN_TASKS}) on http://{host}:{port}/ "
            f"— data in {settings.DATA_DIR}"
        )
        uvicorn.run("config.asgi:application", host=host, port=port, log_level=str(options["log_level"]),
                    lifespan="off", access_log=False, log_config=None,  # Cairn's log format (CAIRN_LOG_FORMAT)
                    # The socket peer, unchanged: Django believes forwarding headers from CAIRN_TRUSTED_PROXIES only.
                    proxy_headers=False, forwarded_allow_ips="")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _warm_generation_pool(local_pool: Callable[[], object]) -> None:
    import logging

    try:
        local_pool()
    except Exception:  # the first question will report the same error to the user
        logging.getLogger(__name__).exception("could not load the language model at start-up")
