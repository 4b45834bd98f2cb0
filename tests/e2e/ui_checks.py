"""What the whole-UI browser tests share: one Chromium per module, contexts per language, axe-core, waits.

axe-core comes from npm (``tests/a11y``, installed by ``make install``) and is
injected into each page by the accessibility test only, whose contexts
bypass the Content-Security-Policy for that purpose; every other context
keeps the policy, and a CSP violation on the console counts as an error.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.browser_fixtures import CHROMIUM, CHROMIUM_ARGS, CairnServer

REPO_ROOT = Path(__file__).resolve().parents[2]
AXE = REPO_ROOT / "tests" / "a11y" / "node_modules" / "axe-core" / "axe.min.js"
LANGUAGES = ("en", "zh-Hans")
WIDTHS = (1280, 390)
INGEST_TIMEOUT_S = 90.0


def chinese_is_served() -> bool:
    """Whether the server negotiates Chinese: LocaleMiddleware on and zh-hans among the LANGUAGES it offers.

    Django's default ``LANGUAGES`` lists zh-hans whatever the project
    translates, so the middleware is what says the site is translated.
    """
    from django.conf import settings

    offered = {code.lower() for code, _ in settings.LANGUAGES}
    return (
        "django.middleware.locale.LocaleMiddleware" in settings.MIDDLEWARE and "zh-hans" in offered
    )


def expected_lang_prefix(language: str) -> str:
    return "zh" if language.startswith("zh") and chinese_is_served() else "en"


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


class Watch:
    """Script errors, CSP violations, dialogs and requests to other origins seen by a page."""

    def __init__(self, page: Any, base: str) -> None:
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.foreign: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on(
            "console",
            lambda message: (
                self.errors.append(message.text)
                if "Content Security Policy" in message.text
                else None
            ),
        )
        page.on("dialog", self._dialog)
        page.on(
            "request",
            lambda request: (
                self.foreign.append(request.url)
                if not (request.url.startswith(base) or request.url.startswith(("data:", "blob:")))
                else None
            ),
        )
        self.expect_dialogs = 0

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        if self.expect_dialogs > 0:
            self.expect_dialogs -= 1
            dialog.accept()
        else:
            dialog.dismiss()


def new_page(
    browser: Any,
    server: CairnServer,
    language: str,
    *,
    width: int = 1280,
    bypass_csp: bool = False,
    headers: dict[str, str] | None = None,
) -> tuple[Any, Watch]:
    context = browser.new_context(
        viewport={"width": width, "height": 900},
        locale=language,
        bypass_csp=bypass_csp,
        accept_downloads=False,
        extra_http_headers={"Accept-Language": language, **(headers or {})},
    )
    page = context.new_page()
    page.set_default_timeout(30_000)
    return page, Watch(page, server.url)


def run_axe(page: Any) -> list[dict[str, Any]]:
    """axe-core's violations on the page as it is now (WCAG 2.x A/AA rules and best practices)."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.add_script_tag(path=str(AXE))
    result = page.evaluate("""async () => {
        const r = await window.axe.run(document, {resultTypes: ['violations']});
        return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                       nodes: v.nodes.slice(0, 5).map(n => n.target.join(' ') + ' :: ' + n.failureSummary)}));
    }""")
    return list(result)


def no_horizontal_scroll(page: Any) -> bool:
    return bool(
        page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth + 1")
    )


def wait_indexed(server: CairnServer, document_id: int) -> None:
    import requests

    deadline = time.monotonic() + INGEST_TIMEOUT_S
    while True:
        status = requests.get(f"{server.url}/api/v1/documents/{document_id}", timeout=30).json()[
            "status"
        ]
        if status == "INDEXED":
            return
        assert status != "FAILED" and time.monotonic() < deadline, (status, server.log_tail())
        time.sleep(0.5)


def screenshot_dir(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    import os

    chosen = os.environ.get("CAIRN_E2E_SCREENSHOTS")
    directory = Path(chosen) / name if chosen else tmp_path_factory.mktemp(name)
    directory.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {directory}")
    return directory
