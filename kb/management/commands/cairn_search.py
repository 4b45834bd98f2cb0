"""Search from the terminal."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from access.services import Actor
from kb import search
from kb.cli import resolve_collection, resolve_user


class Command(BaseCommand):
    help = "Hybrid search over the collections you may read."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("query")
        parser.add_argument("--collection", default=None)
        parser.add_argument("--user", default=None)
        parser.add_argument("-k", type=int, default=5)
        parser.add_argument("--mode", choices=["hybrid", "dense", "lexical"], default="hybrid")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: object, **options: Any) -> None:
        user = resolve_user(options["user"])
        ids = [resolve_collection(user, str(options["collection"]), create=False).pk] if options["collection"] else None
        outcome = search.search_outcome(user=user, actor=Actor(user=user), query=str(options["query"]),
                                        collection_ids=ids, k=int(options["k"]), mode=str(options["mode"]))
        results = outcome.results
        if options["json"]:
            self.stdout.write(json.dumps([r.__dict__ for r in results], ensure_ascii=False, indent=2))
            return
        if outcome.evidence.no_good_match and results:
            self.stdout.write("No good match: nothing below is likely to be relevant.")
        for rank, r in enumerate(results, 1):
            where = f"p. {r.page}" if r.page else (r.heading or "")
            self.stdout.write(f"{rank}. [{r.score:.4f}] {r.title} {where} (chunk {r.chunk_id})")
            self.stdout.write("   " + r.text[:300].replace("\n", " "))
