#!/usr/bin/env python
"""Cairn's command line: Django's manage.py with Cairn's own commands (cairn_*)."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.core.management import execute_from_command_line

    try:
        if len(sys.argv) > 1:
            from config.first_run import prepare

            prepare(sys.argv[1])  # personal: migrate a fresh data directory; team: say migrate must run
        execute_from_command_line(sys.argv)
    except Exception as exc:
        # Start-up configuration errors get one readable line, not a traceback.
        from django.db import OperationalError

        from config.env import ConfigError
        from config.first_run import NotMigrated

        if isinstance(exc, ConfigError):
            sys.stderr.write(f"cairn: configuration error: {exc}\n")
            sys.exit(2)
        if isinstance(exc, NotMigrated):
            sys.stderr.write(f"cairn: {exc}\n")
            sys.exit(2)
        if isinstance(exc, OperationalError) and sys.argv[1:2] and sys.argv[1].startswith("cairn_"):
            sys.stderr.write(f"cairn: the database cannot be used: {exc}\n")
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
