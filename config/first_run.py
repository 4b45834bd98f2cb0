"""Management commands on a database that is not migrated yet.

Personal mode applies the migrations itself before a ``cairn_*`` command
runs, so every command works on a fresh ``CAIRN_DATA_DIR`` (as ``cairn_serve``
always did).  The team shape never migrates behind the operator's back: a
command there stops with one line saying that ``manage.py migrate`` must run
first.  ``manage.py`` calls ``prepare()`` before dispatching a command.
"""

from __future__ import annotations

# Commands that manage the schema or the server themselves.
_SKIP = {"cairn_serve", "cairn_web", "cairn_worker"}


class NotMigrated(Exception):
    """The team database has migrations pending; the message says what to run."""


def pending_migrations() -> int:
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    return len(executor.migration_plan(executor.loader.graph.leaf_nodes()))


def prepare(command: str) -> None:
    """Make the database ready for ``command`` (personal), or refuse it (team); no-op for other commands."""
    if not command.startswith("cairn_") or command in _SKIP:
        return
    import django
    from django.conf import settings

    django.setup()
    pending = pending_migrations()
    if not pending:
        return
    if settings.CAIRN_MODE == "personal":
        from django.core.management import call_command

        call_command("migrate", interactive=False, verbosity=0)
        return
    raise NotMigrated(f"the database has {pending} migrations pending: run `python manage.py migrate` first "
                      "(the Compose `migrate` service, the Kubernetes Job or cairn-migrate.service do it)")
