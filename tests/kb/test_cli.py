"""The terminal commands: ingest a folder, search, ask."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from tests.ingestion.sample_files import make_pdf

pytestmark = pytest.mark.django_db(transaction=True)


def _run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def folder(tmp_path, isolated_storage):
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "boilers.md").write_text("# Boilers\n\nThe boiler safety valve is tested every March by a certified inspector.\n")
    (root / "sub" / "cranes.txt").write_text("Overhead cranes are load tested with 125 percent of rated capacity.\n")
    (root / "sub" / "manual.pdf").write_bytes(make_pdf(["Cover page.", "Forklift batteries are charged in bay seven."]))
    (root / "junk.bin").write_bytes(bytes(range(256)) * 8)
    (root / ".hidden.md").write_text("# Hidden\n\nnever ingested")
    return root


def test_ingest_a_folder_then_search_and_ask(folder):
    out, err = _run("cairn_ingest", str(folder), "--collection", "Plant")
    assert "3 of 3 new documents indexed" in out
    assert "junk.bin" in err  # refused with a reason, the rest goes on

    out, _ = _run("cairn_search", "forklift batteries", "--collection", "Plant", "--json")
    results = json.loads(out)
    assert results[0]["page"] == 2 and "bay seven" in results[0]["text"]

    out, _ = _run("cairn_search", "crane load test", "--collection", "Plant")
    assert out.startswith("1. [") and "cranes.txt" in out.splitlines()[0]

    out, _ = _run("cairn_ask", "When is the boiler safety valve tested?", "--collection", "Plant")
    assert "March" in out
    assert "[1] boilers" in out  # the numbered source list

    # Ingesting the same folder again adds nothing: content hashes dedup.
    out, _ = _run("cairn_ingest", str(folder), "--collection", "Plant")
    assert "0 of 0 new documents indexed" in out


def test_unknown_collections_and_empty_folders_are_clear_errors(folder, tmp_path):
    with pytest.raises(CommandError, match="No collection named 'Nope'"):
        _run("cairn_search", "anything", "--collection", "Nope")
    with pytest.raises(CommandError, match="No collection 999"):
        _run("cairn_ask", "anything", "--collection", "999")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CommandError, match="No files found"):
        _run("cairn_ingest", str(tmp_path / "empty"), "--collection", "Plant")
