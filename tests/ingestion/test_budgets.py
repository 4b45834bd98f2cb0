"""Hostile documents end FAILED with a reason, within a time and memory budget, and the worker lives on
(issue 11, items 11 and 12)."""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
import zipfile

import pytest

from access.models import User
from access.services import Actor
from ingestion import pipeline
from ingestion.models import IngestionJob
from ingestion.parsers import ParseError
from ingestion.parsers.docx import _check_unpacked_size
from ingestion.parsing import parse
from ingestion.services import document_upload
from kb.services import collection_create
from tests.ingestion.sample_files import make_pdf

pytestmark = pytest.mark.django_db
Status = IngestionJob.Status


def styles_and_empty_paragraphs(paragraphs: int = 20_000, styles: int = 300) -> bytes:
    """A 40 KB DOCX that held a worker for minutes: python-docx scanned every style for every paragraph."""
    import docx
    from docx.enum.style import WD_STYLE_TYPE
    from docx.oxml import OxmlElement

    document = docx.Document()
    for i in range(styles):
        document.styles.add_style(f"Custom {i}", WD_STYLE_TYPE.PARAGRAPH)
    for _ in range(paragraphs):
        document.element.body.append(OxmlElement("w:p"))
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def understated_part(real_bytes: int = 64 << 20) -> bytes:
    """A small DOCX whose document.xml claims 100 bytes and inflates to ``real_bytes``."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", b"\0" * real_bytes)
    data = bytearray(out.getvalue())
    for signature, offset in ((b"PK\x01\x02", 24), (b"PK\x03\x04", 22)):  # the central and the local header
        at = data.find(signature) if signature == b"PK\x03\x04" else data.rfind(signature)
        while at != -1:
            if data[at + 30: at + 30 + 17] == b"word/document.xml" or data[at + 46: at + 46 + 17] == b"word/document.xml":
                struct.pack_into("<I", data, at + offset, 100)
            at = data.find(signature, at + 4)
    return bytes(data)


def test_a_docx_of_many_styles_and_empty_paragraphs_parses_in_moments():
    data = styles_and_empty_paragraphs()
    started = time.monotonic()
    document = parse(data)
    assert document.kind == "docx" and document.blocks == []
    assert time.monotonic() - started < 10  # minutes before; about half a second now


def test_a_part_that_understates_its_size_is_refused_without_inflating_it():
    data = understated_part()
    assert len(data) < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(ParseError, match="damaged"):
            _check_unpacked_size(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20  # read a megabyte at a time, never the 64 MB it holds
    with pytest.raises(ParseError, match="damaged"):
        parse(data)


def test_the_time_budget_stops_a_slow_parse_and_says_which_budget(settings):
    settings.CAIRN_PARSE_TIMEOUT = 0.01
    pdf = make_pdf([f"Page {i} of a long manual about boilers and pumps." for i in range(400)])
    with pytest.raises(ParseError, match=r"0\.01-second budget \(CAIRN_PARSE_TIMEOUT\)"):
        parse(pdf)
    settings.CAIRN_PARSE_TIMEOUT = 60
    assert parse(pdf).page_count == 400  # the next parse runs as usual


def test_the_memory_budget_stops_a_hungry_parse_and_says_which_budget(settings):
    settings.CAIRN_PARSE_MAX_MB = 160
    hungry = b"word " * (12 << 20)  # 60 MB of text: decoding and splitting it needs several copies
    with pytest.raises(ParseError, match=r"160 MB memory budget \(CAIRN_PARSE_MAX_MB\)"):
        parse(hungry)


def test_a_budget_ends_the_job_failed_with_its_reason_and_the_worker_goes_on(isolated_storage, settings):
    owner = User.objects.create_user("owner")
    collection = collection_create(actor=Actor(user=owner), owner=owner, name="c")
    from ingestion import api

    pdf = make_pdf([f"Page {i} about valves." for i in range(300)])
    with api.deferred():
        slow = document_upload(actor=Actor(user=owner), collection=collection, filename="m.pdf", chunks=[pdf])
        fine = document_upload(actor=Actor(user=owner), collection=collection, filename="n.txt",
                               chunks=[b"Lighthouse keepers trim the wicks at dusk."])
    settings.CAIRN_PARSE_TIMEOUT = 0.01
    outcome = pipeline.run_ingest_job(IngestionJob.objects.get(version=slow.version).pk)
    assert outcome.status == Status.FAILED and "CAIRN_PARSE_TIMEOUT" in outcome.error
    job = IngestionJob.objects.get(version=slow.version)
    assert job.status == Status.FAILED and job.attempts == 1  # a budget is not retried
    assert pipeline.run_ingest_job(IngestionJob.objects.get(version=fine.version).pk).status == Status.EMBEDDING


def _upload(owner_name: str, name: str, data: bytes) -> IngestionJob:
    from ingestion import api

    owner = User.objects.create_user(owner_name)
    collection = collection_create(actor=Actor(user=owner), owner=owner, name="c")
    with api.deferred():
        result = document_upload(actor=Actor(user=owner), collection=collection, filename=name, chunks=[data])
    return IngestionJob.objects.get(version=result.version)


def test_a_huge_one_line_file_is_refused_before_it_is_chunked(isolated_storage, settings):
    settings.CAIRN_MAX_PASSAGES_PER_DOCUMENT = 1_000
    line = b" ".join(b"pump valve boiler turbine gauge".split() * 200_000)  # ~6 MB, one line
    job = _upload("owner", "line.txt", line)

    started = time.monotonic()
    outcome = pipeline.run_ingest_job(job.pk)

    assert outcome.status == Status.FAILED and time.monotonic() - started < 30
    assert "would make at least" in outcome.error and "limit of 1,000 per document" in outcome.error
    assert "CAIRN_MAX_PASSAGES_PER_DOCUMENT" in outcome.error


def test_the_exact_passage_count_is_held_to_the_limit_too(isolated_storage, settings):
    settings.CAIRN_MAX_PASSAGES_PER_DOCUMENT = 3
    settings.CAIRN_CHUNK_TOKENS, settings.CAIRN_CHUNK_OVERLAP = 16, 0
    job = _upload("owner", "short.txt", " ".join(f"Sentence {i} about the harbour crane." for i in range(7)).encode())

    outcome = pipeline.run_ingest_job(job.pk)

    assert outcome.status == Status.FAILED and "makes" in outcome.error and "limit of 3 per document" in outcome.error


def test_deleting_a_document_stops_its_job_at_the_next_step(isolated_storage, settings):
    from kb.models import Chunk, Document

    settings.CAIRN_CHUNK_TOKENS, settings.CAIRN_CHUNK_OVERLAP = 32, 0
    job = _upload("owner", "long.txt", " ".join(f"Line {i} of the pump manual." for i in range(1_500)).encode())
    steps: list[tuple[str, int, int]] = []

    def delete_after_the_first_slice(stage: str, done: int, total: int) -> None:
        steps.append((stage, done, total))
        if len(steps) == 1:
            Document.objects.unrestricted("test").filter(pk=job.version.document_id).update(
                deleted_at=job.created_at)

    outcome = pipeline.run_ingest_job(job.pk, progress=delete_after_the_first_slice)

    assert len(steps) == 1 and steps[0][2] > steps[0][1]  # more slices were due; none ran
    assert outcome.status == Status.FAILED and "deleted" in outcome.error
    assert not Chunk.objects.unrestricted("test").filter(version=job.version).exists()
    # A job whose document was deleted before it started is not parsed at all.
    waiting = _upload("other", "w.txt", b"Fire drills happen every March.")
    Document.objects.unrestricted("test").filter(pk=waiting.version.document_id).update(deleted_at=waiting.created_at)
    assert pipeline.run_ingest_job(waiting.pk).status == Status.FAILED
