# ruff: noqa: F811  (pytest fixtures imported from tests.e2e.browser_fixtures and ui_checks are parameters here)
"""Every page passes axe-core, in English and Chinese, at 1280 px and 390 px wide, without sideways scrolling.

Given a personal install with a collection holding a Markdown file and a
PDF, when each page is opened (and the search results, an answer and the
citation viewer shown) in a browser whose language is English or Chinese at
desktop and phone widths, then axe-core finds no violation, the page does
not scroll sideways, and ``<html lang>`` names the language the server
serves (Chinese once the server offers it: ``ui_checks.chinese_is_served``).
Screenshots of every screen go to a temporary folder (printed).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.browser_fixtures import CHROMIUM, CairnServer, cairn_server  # noqa: F401 (fixtures)
from tests.e2e.ui_checks import (
    AXE,
    LANGUAGES,
    WIDTHS,
    chromium,  # noqa: F401 (a fixture)
    expected_lang_prefix,
    new_page,
    no_horizontal_scroll,
    run_axe,
    screenshot_dir,
    wait_indexed,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed (apt-get install chromium)"
    ),
    pytest.mark.skipif(
        not AXE.exists(),
        reason="axe-core is not installed (make install: npm ci --prefix tests/a11y)",
    ),
]

HANDBOOK = b"""# Lighthouse keeping handbook

## Lens care

The keeper polishes the brass lens every Tuesday at dawn, using a soft chamois cloth.
A scratched lens must be reported to the harbour master within two days.
"""


@pytest.fixture(scope="module")
def shelf(cairn_server: CairnServer) -> dict[str, Any]:
    import requests

    from tests.ingestion.sample_files import make_pdf

    base = cairn_server.url
    collection = requests.post(
        f"{base}/api/v1/collections", json={"name": "Harbour manuals"}, timeout=30
    ).json()["id"]
    ids = []
    for name, data, kind in (
        ("lighthouse.md", HANDBOOK, "text/markdown"),
        (
            "beacon.pdf",
            make_pdf(["The lighthouse beacon is tested every Thursday at noon."]),
            "application/pdf",
        ),
    ):
        response = requests.post(
            f"{base}/api/v1/collections/{collection}/documents",
            timeout=60,
            files={"file": (name, data, kind)},
        )
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    for document_id in ids:
        wait_indexed(cairn_server, document_id)
    event = requests.get(f"{base}/api/v1/audit", params={"page_size": 1}, timeout=30).json()[
        "results"
    ][0]["id"]
    return {"collection": collection, "documents": ids, "event": event}


def _pages(base: str, shelf: dict[str, Any]) -> list[tuple[str, str]]:
    collection, document = shelf["collection"], shelf["documents"][0]
    return [
        ("home", f"{base}/"),
        ("collection", f"{base}/collections/{collection}/"),
        ("document", f"{base}/documents/{document}/"),
        ("evaluation", f"{base}/collections/{collection}/evaluation/"),
        ("audit-list", f"{base}/audit/"),
        ("audit-event", f"{base}/audit/{shelf['event']}/"),
        ("keys", f"{base}/settings/keys/"),
        ("access", f"{base}/settings/access/"),
        ("access-user", f"{base}/settings/access/users/me/"),
        ("not-found", f"{base}/collections/999999/"),
    ]


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_page_passes_axe_in_both_languages_at_desktop_and_phone_width(
    cairn_server: CairnServer,
    chromium: Any,
    shelf: dict[str, Any],
    language: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    base = cairn_server.url
    shots = screenshot_dir(tmp_path_factory, f"a11y-{language}")
    violations: dict[str, list[dict[str, Any]]] = {}
    scrolling: list[str] = []
    langs: dict[str, str] = {}

    def check(page: Any, name: str, width: int) -> None:
        key = f"{name}@{width}"
        found = run_axe(page)
        if found:
            violations[key] = found
        if not no_horizontal_scroll(page):
            scrolling.append(key)
        langs[key] = page.evaluate("document.documentElement.lang")
        page.screenshot(path=str(shots / f"{key}.png"), full_page=True)

    for width in WIDTHS:
        page, watch = new_page(chromium, cairn_server, language, width=width, bypass_csp=True)
        for name, url in _pages(base, shelf):
            response = page.goto(url)
            assert response is not None
            assert response.status == (404 if name == "not-found" else 200), (name, response.status)
            check(page, name, width)

        # The collection page's dynamic states: search results, an answer, the citation viewer
        page.goto(f"{base}/collections/{shelf['collection']}/")
        page.fill("#search-query", "brass lens")
        page.locator("#search-form button[type=submit]").click()
        page.locator("#search-results .result").first.wait_for()
        check(page, "search-results", width)
        page.fill("#ask-question", "When is the lighthouse beacon tested?")
        page.locator("#ask-form button[type=submit]").click()
        page.locator("#ask-result .citation").first.wait_for(timeout=60_000)
        check(page, "answer", width)
        page.locator("#ask-result a.cite-ref").first.click()
        page.locator("#viewer .viewer__passage").wait_for()
        page.wait_for_function(
            "() => { const i = document.querySelector('#viewer .viewer__page img');"
            " return i && i.complete && i.naturalWidth > 0; }"
        )
        check(page, "viewer", width)

        # The sign-in page: what a client that is not this computer gets (personal mode signs in loopback only)
        login, _ = new_page(
            chromium,
            cairn_server,
            language,
            width=width,
            bypass_csp=True,
            headers={"X-Forwarded-For": "203.0.113.9"},
        )
        response = login.goto(f"{base}/login/")
        assert response is not None and login.locator("form input[name=username]").count() == 1, (
            login.url
        )
        check(login, "login", width)
        login.context.close()
        assert not watch.errors, watch.errors
        page.context.close()

    report = "\n".join(
        f"{page}: {v['id']} ({v['impact']}) {v['help']}\n    " + "\n    ".join(v["nodes"])
        for page, found in violations.items()
        for v in found
    )
    assert not violations and not scrolling, (
        f"axe-core violations ({language}); screenshots in {shots}:\n{report}\npages that scroll sideways: {scrolling}"
    )
    prefix = expected_lang_prefix(language)
    assert all(lang.lower().startswith(prefix) for lang in langs.values()), langs
    print(f"{len(langs)} screens checked in {language}; screenshots in {shots}")


def test_the_other_browser_contexts_keep_the_content_security_policy(
    cairn_server: CairnServer,
    chromium: Any,
) -> None:
    """Without ``bypass_csp`` an injected inline script is refused and reported: the CSP checks still bite."""
    page, watch = new_page(chromium, cairn_server, "en")
    page.goto(f"{cairn_server.url}/")
    try:
        page.add_script_tag(content="window.__injected = 1;")
    except Exception:  # noqa: BLE001 (Playwright reports the refusal as an error, depending on the version)
        pass
    assert page.evaluate("() => window.__injected === undefined")
    page.wait_for_timeout(200)
    assert any("Content Security Policy" in error for error in watch.errors), watch.errors
    page.context.close()


def test_axe_catches_a_violation_when_there_is_one(
    cairn_server: CairnServer, chromium: Any
) -> None:
    """The oracle works: an unlabelled input added to a page is reported."""
    page, _ = new_page(chromium, cairn_server, "en", bypass_csp=True)
    page.goto(f"{cairn_server.url}/settings/keys/")
    page.evaluate(
        "() => document.querySelector('main').appendChild(document.createElement('input'))"
    )
    assert "label" in {v["id"] for v in run_axe(page)}
    page.context.close()
