#!/usr/bin/env python
"""Cairn's command line: Django's manage.py with Cairn's own commands (cairn_*)."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except Exception as exc:
        # Start-up configuration errors get one readable line, not a traceback.
        from config.env import ConfigError

        if isinstance(exc, ConfigError):
            sys.stderr.write(f"cairn: configuration error: {exc}\n")
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
