"""Ask a question from the terminal; prints the answer and its citations."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from access.services import Actor
from inference.admission import AdmissionRefused
from kb.answering import GenerationFailed, answer_question
from kb.cli import resolve_collection, resolve_user


class Command(BaseCommand):
    help = "Answer a question from your documents, with numbered citations."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("question")
        parser.add_argument("--collection", default=None)
        parser.add_argument("--user", default=None)
        parser.add_argument("--show-reasoning", action="store_true")

    def handle(self, *args: object, **options: Any) -> None:
        user = resolve_user(options["user"])
        ids = [resolve_collection(user, str(options["collection"]), create=False).pk] if options["collection"] else None
        try:
            result = answer_question(user=user, actor=Actor(user=user), question=str(options["question"]),
                                     collection_ids=ids)
        except (AdmissionRefused, GenerationFailed) as exc:
            raise CommandError(str(exc)) from exc
        if options["show_reasoning"] and result.answer.reasoning:
            self.stdout.write("Reasoning:\n" + result.answer.reasoning + "\n")
        self.stdout.write(result.answer.answer)
        self.stdout.write("")
        for p in result.cited or result.passages:
            where = f", p. {p.page}" if p.page else ""
            self.stdout.write(f"[{p.number}] {p.title}{where} (chunk {p.chunk_id})")
