"""``manage.py cairn_doctor [--json] [--model PATH]``: can this host run the configured model?"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from inference.doctor import diagnose, format_report, report_json


class Command(BaseCommand):
    help = (
        "Report CUDA and GPUs with free memory, library versions, and for the configured model "
        "(CAIRN_LLM_PATH) its parameter count and the memory it needs at bf16 / 8-bit / 4-bit "
        "against what is free, with a recommendation. Reads no weights."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="print the report as JSON")
        parser.add_argument("--model", help="a model directory or .gguf file instead of CAIRN_LLM_PATH")

    def handle(self, *args: Any, **options: Any) -> None:
        backend = settings.CAIRN_LLM_BACKEND
        model_path = options["model"] or settings.CAIRN_LLM_PATH
        if options["model"] and backend not in ("transformers", "vllm"):
            backend = "transformers"  # asking about a model means asking whether it would load locally
        report = diagnose(backend, model_path, dict(settings.CAIRN_LLM_OPTIONS))
        self.stdout.write(report_json(report) if options["json"] else format_report(report))
