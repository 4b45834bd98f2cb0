"""Tune a collection's fusion on its golden set, with cross-validation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from access.services import Actor
from kb.cli import resolve_collection, resolve_user
from kb.exceptions import NotFound
from kb.selectors import evaluable_collection_get
from kb.tuning import TooFewQuestions, fusion_apply, fusion_tune


class Command(BaseCommand):
    help = (
        "Score fusion settings (weighted RRF; convex min-max and z-score over dense weights) on a collection's "
        "golden questions, print nDCG@10 per setting and the choice with its cross-validated margin over the "
        "untuned default; --apply stores it on the collection, where search and ask use it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("collection", help="collection id or name")
        parser.add_argument("--user", default=None)
        parser.add_argument("--folds", type=int, default=5)
        parser.add_argument("--apply", action="store_true", help="store the choice on the collection")
        parser.add_argument("--json", type=Path, default=None, help="also write the table to this file")

    def handle(self, *args: object, **options: Any) -> None:
        user = resolve_user(options["user"])
        collection = resolve_collection(user, str(options["collection"]), create=False)
        try:
            collection = evaluable_collection_get(user, collection.pk)
        except NotFound:
            raise CommandError(f"{user} may not tune collection {collection.name!r} (editors and owners may)") from None
        try:
            result = fusion_tune(collection=collection, folds=int(options["folds"]))
        except TooFewQuestions as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"{collection.name}: {result.questions} golden questions, {result.folds}-fold "
                          f"cross-validation\n")
        self.stdout.write(f"{'fusion':<34} {'nDCG@10':>8}")
        for config, ndcg in zip(result.settings, result.ndcg, strict=True):
            marks = (" (default)" if config == result.default else "") + (" <- chosen" if config == result.chosen
                                                                          else "")
            self.stdout.write(f"{config.describe():<34} {ndcg:8.4f}{marks}")
        self.stdout.write(f"\nheld-out nDCG@10: tuned {result.cv_tuned:.4f}, default {result.cv_default:.4f} "
                          f"(margin {result.margin:+.4f})")
        if result.chosen == result.default:
            self.stdout.write("no setting beats the default on held-out questions: the default stays")
        if options["apply"]:
            fusion_apply(actor=Actor(user=user), collection=collection, result=result)
            self.stdout.write(f"applied: {result.chosen.describe()}")
        if options["json"]:
            Path(options["json"]).write_text(json.dumps({
                "collection": collection.name, "questions": result.questions, "folds": result.folds,
                "table": [{"fusion": c.describe(), "ndcg10": v} for c, v in zip(result.settings, result.ndcg,
                                                                               strict=True)],
                "chosen": result.chosen.describe(), "default": result.default.describe(),
                "cv_tuned": result.cv_tuned, "cv_default": result.cv_default, "applied": result.applied,
            }, indent=2))
