"""The web UI in a real browser against a real Cairn server and its background worker.

Given a fresh personal install (``cairn_serve``: web app + in-process worker),
when a user creates a collection, uploads a Markdown file, searches and asks
through the pages, then they see the file INDEXED, the passage found, and an
answer whose citations link to the document.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.browser_fixtures import CHROMIUM, CairnServer, browser_page, cairn_server  # noqa: F401 (fixtures)

DOCUMENT = """# Lighthouse keeping handbook

## Lens care

The keeper polishes the brass lens every Tuesday at dawn, using a soft chamois
cloth and no solvents. A scratched lens must be reported to the harbour master
within two days.

## Fog signals

When visibility drops below one nautical mile the keeper sounds the foghorn
twice every ninety seconds until the fog lifts.
"""

INGEST_TIMEOUT_MS = 45_000


def _screenshot_dir(tmp_path: Path) -> Path:
    # CAIRN_E2E_SCREENSHOTS keeps them somewhere stable for a person to look at.
    chosen = os.environ.get("CAIRN_E2E_SCREENSHOTS")
    directory = Path(chosen) if chosen else tmp_path / "screenshots"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed (apt-get install chromium)")
def test_upload_search_and_ask_in_the_browser(cairn_server: CairnServer, browser_page: Any, tmp_path: Path) -> None:  # noqa: F811
    page = browser_page
    base = cairn_server.url
    shots = _screenshot_dir(tmp_path)
    started = time.monotonic()

    # Given the home page of a fresh personal install
    page.goto(f"{base}/")
    assert page.locator(".brand__name").inner_text() == "Cairn"
    assert page.locator(".badge--mode").inner_text().strip().lower() == "personal"

    # When the user creates a collection, it is listed and opens
    page.get_by_label("Name").fill("Harbour manuals")
    page.get_by_label("Description").fill("Everything the keepers need.")
    page.get_by_role("button", name="Create collection").click()
    page.get_by_role("link", name="Harbour manuals").click()
    page.wait_for_url(re.compile(r"/collections/\d+/$"))
    assert page.get_by_role("heading", level=1).inner_text() == "Harbour manuals"

    # When a Markdown file is uploaded through the file input
    page.set_input_files("#upload-input", files=[{
        "name": "lighthouse.md", "mimeType": "text/markdown", "buffer": DOCUMENT.encode(),
    }])
    row = page.locator("tr.doc-row", has_text="lighthouse.md")
    row.wait_for()

    # Then its row is polled until it reaches INDEXED (and never FAILED)
    page.wait_for_function(
        "() => { const r = document.querySelector('tr.doc-row');"
        " return r && ['INDEXED', 'FAILED'].includes(r.dataset.status); }",
        timeout=INGEST_TIMEOUT_MS,
    )
    status = row.get_attribute("data-status")
    assert status == "INDEXED", f"ingestion ended {status}: {row.inner_text()}\n{cairn_server.log_tail()}"
    assert "INDEXED" in row.locator(".status").inner_text()
    assert page.locator(".upload-result--ok", has_text="lighthouse.md").is_visible()

    # When the user searches for a phrase from the file, then the passage is found
    page.get_by_label("Search this collection").fill("brass lens")
    page.get_by_role("button", name="Search", exact=True).click()
    result = page.locator("#search-results .result").first
    result.wait_for()
    assert "lighthouse.md" in result.locator(".result__title").inner_text()
    assert "brass lens" in result.locator(".result__text").first.inner_text().lower()  # its best passage first

    # When the user asks a question, then an answer comes with citations linking to the document
    page.get_by_label("Question").fill("When does the keeper polish the brass lens?")
    page.get_by_role("button", name="Ask", exact=True).click()
    citation = page.locator("#ask-result .citation").first
    citation.wait_for(timeout=30_000)
    answer = page.locator("#ask-result .answer__text").inner_text()
    assert answer.strip(), "the answer is empty"
    citation_link = citation.locator("a.citation__title")
    assert citation_link.inner_text() == "lighthouse.md"
    assert re.fullmatch(r"/documents/\d+/\?chunk=\d+#chunk-\d+", citation_link.get_attribute("href") or "")
    markers = page.locator("#ask-result a.cite-ref")
    assert markers.count() >= 1, f"no [n] marker in the answer turned into a link: {answer!r}"
    markers.first.click()
    assert "is-highlighted" in (page.locator("#ask-result .citation.is-highlighted").first.get_attribute("class") or "")
    # The marker opened the passage beside the answer (a Markdown file: text, no page image); Escape closes it
    viewer = page.locator("#viewer")
    viewer.locator(".viewer__passage").wait_for()
    assert "brass lens" in viewer.locator(".viewer__passage").inner_text().lower()
    page.screenshot(path=str(shots / "collection.png"), full_page=True)
    page.keyboard.press("Escape")
    viewer.wait_for(state="hidden")

    # And the cited document's page shows its passages, the cited one highlighted
    citation_link.click()
    page.wait_for_url(re.compile(r"/documents/\d+/\?chunk=\d+#chunk-\d+$"))
    assert page.get_by_role("heading", level=1).inner_text() == "lighthouse.md"
    assert page.locator(".passage", has_text="brass lens").count() >= 1
    assert "brass lens" in page.locator(".passage--target").inner_text().lower()
    page.screenshot(path=str(shots / "document.png"), full_page=True)

    page.goto(f"{base}/")
    page.screenshot(path=str(shots / "home.png"), full_page=True)

    # When the user deletes the document (confirming), then it leaves the table
    page.get_by_role("link", name="Harbour manuals").click()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete lighthouse.md").click()
    page.locator("tr.doc-row").first.wait_for(state="detached")
    assert page.locator("#documents-count").inner_text() == "0 documents"

    assert not page.script_errors, f"JavaScript errors in the page: {page.script_errors}"
    print(f"\nbrowser flow took {time.monotonic() - started:.1f} s; screenshots in {shots}")


def test_the_api_docs_page_renders_under_the_strict_policy(cairn_server: CairnServer, browser_page: Any,  # noqa: F811
                                                           tmp_path: Path) -> None:
    page = browser_page
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{cairn_server.url}/api/docs/")
    page.wait_for_selector(".swagger-ui .opblock", timeout=30_000)  # operations rendered from /api/schema/
    assert page.locator(".opblock-summary-path", has_text="/api/v1/search").count() >= 1
    page.screenshot(path=str(_screenshot_dir(tmp_path) / "api-docs.png"), full_page=False)
    assert not page.script_errors, page.script_errors
    assert all(url.startswith(cairn_server.url) or url.startswith("data:") for url in requested), requested


def _pdf_with_a_passage_at_the_top_of_page_two() -> bytes:
    from tests.ingestion.sample_files import make_pdf

    filler = "\n".join(f"Routine entry {n} of the harbour log." for n in range(30))
    return make_pdf([
        "The harbour office opens at eight. Keepers report there before each shift.",
        "The lighthouse beacon is tested every Thursday at noon by the duty keeper.\n\n" + filler,
    ])


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed (apt-get install chromium)")
def test_a_citation_opens_its_passage_on_the_rendered_pdf_page(cairn_server: CairnServer, browser_page: Any,  # noqa: F811
                                                               tmp_path: Path) -> None:
    page = browser_page
    base = cairn_server.url
    shots = _screenshot_dir(tmp_path)

    # Given a collection with a PDF whose beacon passage opens page 2
    page.goto(f"{base}/")
    page.get_by_label("Name").fill("Beacon manuals")
    page.get_by_role("button", name="Create collection").click()
    page.get_by_role("link", name="Beacon manuals").click()
    page.wait_for_url(re.compile(r"/collections/\d+/$"))
    page.set_input_files("#upload-input", files=[{
        "name": "beacon.pdf", "mimeType": "application/pdf", "buffer": _pdf_with_a_passage_at_the_top_of_page_two(),
    }])
    page.wait_for_function(
        "() => { const r = document.querySelector('tr.doc-row');"
        " return r && ['INDEXED', 'FAILED'].includes(r.dataset.status); }",
        timeout=INGEST_TIMEOUT_MS,
    )
    assert page.locator("tr.doc-row").get_attribute("data-status") == "INDEXED", cairn_server.log_tail()

    # When the user asks and clicks the first citation marker
    page.get_by_label("Question").fill("When is the lighthouse beacon tested?")
    page.get_by_role("button", name="Ask", exact=True).click()
    page.locator("#ask-result .citation").first.wait_for(timeout=30_000)
    marker = page.locator("#ask-result a.cite-ref").first
    marker.click()

    # Then a side panel shows the highlighted passage and page 2 with the passage's boxes over it
    viewer = page.locator("#viewer")
    viewer.locator(".viewer__page img").wait_for()
    assert viewer.get_attribute("role") == "dialog"
    assert "beacon is tested" in viewer.locator("mark.viewer__passage").inner_text()
    assert page.evaluate("document.activeElement && document.activeElement.id") == "viewer-title"
    page.wait_for_function("() => { const i = document.querySelector('#viewer .viewer__page img');"
                           " return i && i.complete && i.naturalWidth > 0; }")
    assert "/pages/2.png" in (viewer.locator(".viewer__page img").get_attribute("src") or "")
    boxes = viewer.locator(".viewer__box")
    assert boxes.count() >= 1
    image_box = viewer.locator(".viewer__page img").bounding_box()
    first_box = boxes.first.bounding_box()
    assert image_box and first_box and first_box["height"] > 0
    assert first_box["y"] < image_box["y"] + image_box["height"] / 2  # the passage is at the top of the page
    # The answer stays beside the panel
    assert page.locator("#ask-result .answer__text").is_visible()
    page.screenshot(path=str(shots / "viewer.png"), full_page=False)

    # Escape closes the panel and focus returns to the marker
    page.keyboard.press("Escape")
    viewer.wait_for(state="hidden")
    assert page.evaluate("document.activeElement && document.activeElement.classList.contains('cite-ref')")

    # A source card opens the panel too
    page.locator("#ask-result .citation__open").first.click()
    viewer.locator("mark.viewer__passage").wait_for()
    page.keyboard.press("Escape")

    # The deep link to the passage scrolls to it and highlights it on the document's page
    href = page.locator("#ask-result a.citation__title").first.get_attribute("href") or ""
    page.goto(base + href)
    target = page.locator(".passage--target")
    target.wait_for()
    assert "beacon is tested" in target.inner_text()
    assert target.is_visible() and page.evaluate("document.activeElement.classList.contains('passage--target')")
    page.screenshot(path=str(shots / "document-deep-link.png"), full_page=False)

    assert not page.script_errors, f"JavaScript errors in the page: {page.script_errors}"


@pytest.mark.slow
def test_a_conversation_keeps_its_turns_and_understands_a_follow_up(
        cairn_server: CairnServer, browser_page: Any, tmp_path: Path) -> None:  # noqa: F811
    import requests

    base = cairn_server.url
    collection = requests.post(f"{base}/api/v1/collections", json={"name": "Keepers"}, timeout=30).json()["id"]
    uploaded = requests.post(f"{base}/api/v1/collections/{collection}/documents", timeout=60,
                             files={"file": ("lighthouse.md", DOCUMENT.encode(), "text/markdown")}).json()
    deadline = time.monotonic() + INGEST_TIMEOUT_MS / 1000
    while requests.get(f"{base}/api/v1/documents/{uploaded['id']}", timeout=30).json()["status"] != "INDEXED":
        assert time.monotonic() < deadline, cairn_server.log_tail()
        time.sleep(0.5)

    page = browser_page
    page.goto(f"{base}/collections/{collection}/")
    page.get_by_label("Question").fill("When does the keeper polish the brass lens?")
    page.get_by_role("button", name="Ask", exact=True).click()
    page.locator("#ask-result .citation").first.wait_for(timeout=30_000)
    page.wait_for_url(re.compile(r"\?conversation=\d+"))

    # A follow-up that only makes sense with the first question is answered from the right passage.
    page.get_by_label("Question").fill("And what if it is scratched?")
    page.get_by_role("button", name="Ask", exact=True).click()
    page.wait_for_function("() => document.querySelectorAll('#ask-thread .turn').length === 1"
                           " && document.querySelector('#ask-result .citation')", timeout=30_000)
    latest = page.locator("#ask-result").inner_text().lower()
    assert "scratched" in latest and "harbour master" in latest, latest
    page.screenshot(path=str(_screenshot_dir(tmp_path) / "conversation.png"), full_page=True)

    # A reload shows the whole conversation again; "New conversation" starts afresh.
    page.reload()
    page.wait_for_function("() => document.querySelectorAll('#ask-thread .turn').length === 1"
                           " && document.querySelector('#ask-result .citation')", timeout=30_000)
    assert "polish the brass lens" in page.locator("#ask-thread").inner_text()
    page.get_by_role("button", name="New conversation").click()
    assert page.locator("#ask-thread .turn").count() == 0 and "conversation=" not in page.url

    # Search says when nothing matches well, shows relevance as a bar (not the fusion score), keeps the query
    # in the URL and links each result to its passage.
    page.get_by_label("Search this collection").fill("xylophone quantum zebra")
    page.get_by_role("button", name="Search", exact=True).click()
    page.locator('[data-role="no-good-match"]').wait_for(timeout=30_000)
    page.get_by_label("Search this collection").fill("brass lens")
    page.get_by_role("button", name="Search", exact=True).click()
    page.wait_for_url(re.compile(r"q=brass\+lens"))
    page.reload()
    first = page.locator("#search-results .result").first
    first.wait_for(timeout=30_000)
    assert page.locator('[data-role="no-good-match"]').count() == 0
    # Grouped by document: one relevance bar per passage of it
    assert "Score" not in first.inner_text()
    assert first.locator("meter").count() == first.locator(".result__passage").count() >= 1
    assert "chunk=" in (first.locator("a.result__title").get_attribute("href") or "")

    # On the document's page an editor replaces the file, sees the versions and restores the first one.
    page.goto(f"{base}/documents/{uploaded['id']}/")
    page.set_input_files("#replace-input", files=[{
        "name": "lighthouse.md", "mimeType": "text/markdown", "buffer": (DOCUMENT + "\nRevised.\n").encode()}])
    page.locator('[data-role="versions"] tr[data-version="2"]').wait_for(timeout=30_000)
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator('tr[data-version="1"] [data-document-action="restore"]').click()
    page.locator('[data-role="versions"] tr[data-version="3"]').wait_for(timeout=30_000)
    page.goto(f"{base}/collections/{collection}/")

    # The owner renames the collection, then deletes it after a confirmation that says what goes with it.
    page.get_by_text("Rename or delete").click()
    page.locator("#rename-name").fill("Keepers' handbook")
    page.get_by_role("button", name="Rename", exact=True).click()
    page.wait_for_function("() => document.querySelector('h1').textContent.trim() === \"Keepers' handbook\"")
    messages: list[str] = []
    page.once("dialog", lambda dialog: (messages.append(dialog.message), dialog.accept()))
    page.get_by_text("Rename or delete").click()
    page.get_by_role("button", name="Delete this collection").click()
    page.wait_for_url(f"{base}/")
    assert messages and "1 document" in messages[0] and "Keepers' handbook" in messages[0], messages
    assert page.get_by_role("link", name="Keepers' handbook").count() == 0
    assert not page.script_errors, page.script_errors
