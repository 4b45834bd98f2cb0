"""Audit review in a real browser against a real (ASGI) Cairn server.

Given a personal install (its owner is the admin), when the owner creates a
collection, opens "Audit log" from the header, filters by action and opens
the event, then they see it; and the CSV/JSONL exports stream back exactly
the filtered events from the real ASGI server.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.browser_fixtures import CHROMIUM, CairnServer, browser_page, cairn_server  # noqa: F401 (fixtures)


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed (apt-get install chromium)")
def test_the_owner_reviews_filters_opens_and_exports_audit_events(cairn_server: CairnServer, browser_page: Any) -> None:  # noqa: F811
    page = browser_page
    base = cairn_server.url

    # Given a collection the owner just created through the page
    page.goto(f"{base}/")
    page.get_by_label("Name").fill("Audited shelf")
    page.get_by_role("button", name="Create collection").click()
    page.get_by_role("link", name="Audited shelf").first.wait_for()

    # When they open the audit log from the header and filter by action
    page.goto(f"{base}/")
    page.locator('[data-role="nav-audit"]').click()
    page.get_by_role("heading", name="Audit log").wait_for()
    page.get_by_label("Action").fill("collection.create")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**/audit/?*action=collection.create*")

    # Then exactly that event is listed, and its page shows its fields
    rows = page.locator("tr.audit-row")
    assert rows.count() == 1, cairn_server.log_tail()
    assert "collection.create" in rows.first.inner_text()
    shots = os.environ.get("CAIRN_E2E_SCREENSHOTS")  # for a person to look at
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(shots) / "audit-list.png"), full_page=True)
    rows.first.get_by_role("link").click()
    page.get_by_role("heading", name="Fields").wait_for()
    assert '"name": "Audited shelf"' in page.locator("#event-detail").inner_text()
    if shots:
        page.screenshot(path=str(Path(shots) / "audit-event.png"), full_page=True)

    # And both exports stream the filtered set back from the ASGI server
    csv_response = page.request.get(f"{base}/audit/export.csv?action=collection.create")
    assert csv_response.status == 200 and csv_response.headers["content-type"].startswith("text/csv")
    exported = list(csv.DictReader(io.StringIO(csv_response.text())))
    assert [r["action"] for r in exported] == ["collection.create"]
    jsonl_response = page.request.get(f"{base}/audit/export.jsonl?action=collection.create")
    lines = [json.loads(line) for line in jsonl_response.text().splitlines()]
    assert [e["detail"] for e in lines] == [{"name": "Audited shelf"}]
    assert page.script_errors == []
