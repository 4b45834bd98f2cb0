"""``GET /metrics`` through prometheus_client: requests by route and status, search legs, jobs, the index."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.kb.conftest import upload

pytestmark = pytest.mark.django_db(transaction=True)


def samples(client) -> dict[tuple[str, frozenset], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.content.decode()) for s in family.samples}


def value(found: dict, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in found.items() if n == name and set(labels.items()) <= ls)


def test_metrics_after_an_upload_and_a_search(api, collection_id, client):
    before = samples(client)
    response = upload(api, collection_id, "pumps.txt", b"The pump room access code is heron-7.\n\nValves are checked daily.")
    assert response.status_code == 201
    assert api.get("/api/v1/search", {"q": "pump room code"}).status_code == 200
    assert api.get("/api/v1/documents/999999").status_code == 404

    after = samples(client)
    search_route = {"route": "api/v1/search", "method": "GET", "status": "200"}
    assert value(after, "cairn_http_requests_total", **search_route) == value(before, "cairn_http_requests_total",
                                                                               **search_route) + 1
    assert value(after, "cairn_http_requests_total", route="api/v1/documents/<str:document_id>", status="404") >= 1
    assert value(after, "cairn_http_request_duration_seconds_count", route="api/v1/search") >= 1
    for leg in ("total", "scope", "embed", "retrieve", "materialise"):
        assert value(after, "cairn_search_duration_seconds_count", leg=leg) >= 1, leg
    assert value(after, "cairn_ingestion_jobs", state="INDEXED") >= 1
    assert value(after, "cairn_ingestion_jobs", state="FAILED") == 0
    assert value(after, "cairn_index_version") >= 1 and value(after, "cairn_index_chunks") >= 1
    assert value(after, "cairn_index_size_bytes") > 0
    assert value(after, "cairn_metrics_source_up", source="jobs") == 1


def test_stage_durations_and_failures_by_reason(api, collection_id, client, settings):
    """Every stage of an indexed document is timed; failed jobs are counted by what went wrong."""
    assert upload(api, collection_id, "valves.txt", b"Valves are checked daily.\n\nThe pump is blue.").status_code == 201
    broken = upload(api, collection_id, "broken.pdf", b"%PDF-1.7\n this is not really a PDF")
    assert broken.status_code in (201, 400), broken.content
    settings.CAIRN_MAX_PASSAGES_PER_DOCUMENT = 2
    long = "\n\n".join(f"Paragraph {i} about valve number {i} and its yearly inspection." * 30 for i in range(20))
    assert upload(api, collection_id, "long.txt", long.encode()).status_code == 201

    found = samples(client)
    for stage in ("parse", "chunk", "embed", "index"):
        assert value(found, "cairn_ingestion_stage_duration_seconds_count", stage=stage) >= 1, stage
        assert value(found, "cairn_ingestion_stage_duration_seconds_sum", stage=stage) > 0, stage
        assert value(found, "cairn_ingestion_stage_duration_seconds_bucket", stage=stage, le="+Inf") == value(
            found, "cairn_ingestion_stage_duration_seconds_count", stage=stage)
    assert value(found, "cairn_ingestion_failed_jobs", reason="too_many_passages") == 1
    if broken.status_code == 201:  # refused at upload (400) when the sniffer already sees it is not a PDF
        assert value(found, "cairn_ingestion_failed_jobs", reason="unreadable") == 1
    assert value(found, "cairn_ingestion_failed_jobs", reason="time_budget") == 0  # every reason present
    assert value(found, "cairn_ingestion_failed_jobs") == value(found, "cairn_ingestion_jobs", state="FAILED")


def test_no_route_label_carries_an_id(api, collection_id, client):
    api.get(f"/api/v1/collections/{collection_id}")
    api.get("/no/such/page/12345")
    routes = {dict(labels).get("route") for (name, labels) in samples(client) if name == "cairn_http_requests_total"}
    assert "unmatched" in routes
    assert "api/v1/collections/<str:collection_id>" in routes
    assert not any("12345" in route or f"collections/{collection_id}" in route for route in routes if route)


def test_the_last_audit_verification_is_exported(api, collection_id, client, settings):
    from pathlib import Path

    from django.core.management import call_command

    (Path(settings.DATA_DIR) / "audit-verification.json").unlink(missing_ok=True)
    assert value(samples(client), "cairn_audit_chain_ok") == 0  # absent until a verification ran
    call_command("cairn_audit_verify")
    after = samples(client)
    assert ("cairn_audit_chain_ok", frozenset()) in after and value(after, "cairn_audit_chain_ok") == 1
    assert value(after, "cairn_audit_chain_verified_timestamp_seconds") > 1.7e9
