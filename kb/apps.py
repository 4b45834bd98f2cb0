from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class KbConfig(AppConfig):
    name = "kb"
    verbose_name = "Knowledge base"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # kb.checks registers the start-up checks (CAIRN_DENSE_DEVICE=cuda needs a GPU);
        # kb.selectors installs RestrictedQuerySet.restrict: every query of documents, versions and chunks needs it.
        import kb.checks  # noqa: F401
        import kb.selectors  # noqa: F401

        post_migrate.connect(_install_range_cache, sender=self, dispatch_uid="kb.range_cache.install")


def _install_range_cache(sender: AppConfig, using: str = "default", **kwargs: Any) -> None:
    """After every migrate: a SQLite table rebuild drops the documents table's triggers; re-create them."""
    from django.db import connections

    from kb import range_cache

    range_cache.install(connections[using])
