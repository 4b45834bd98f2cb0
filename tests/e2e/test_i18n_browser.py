"""The web UI in Chinese, in a real browser against a real Cairn server.

Given a fresh personal install, when a user switches the page header's language to 简体中文, then every
page they open is in Chinese with <html lang="zh-Hans">, the strings the scripts build (upload progress,
search summaries, the "no good match" notice) are Chinese too, and the query 带薪年假多少天 highlights
带薪年假 in a Chinese document — by the index's own terms, not by exact substring.  Switching back gives
English again.  CSP violations and script errors fail the test (browser_page collects them).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.e2e.browser_fixtures import CHROMIUM, CairnServer, browser_page, cairn_server  # noqa: F401 (fixtures)

DOCUMENT = """员工休假制度

第一条 员工入职满一年后，每年享有带薪年假十五天，可分次休完。

第二条 病假须提供医院证明，病假期间按基本工资发放。
"""

INGEST_TIMEOUT_MS = 45_000


def _switch(page: Any, language: str) -> None:
    """Choose a language in the header's switcher; its script submits the form and the page comes back."""
    with page.expect_navigation():
        page.select_option("#language-select", language)


@pytest.mark.slow
@pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed (apt-get install chromium)"
)
def test_the_ui_in_chinese_via_the_switcher(cairn_server: CairnServer, browser_page: Any) -> None:  # noqa: F811
    page = browser_page
    base = cairn_server.url

    # Given the English home page, when the user picks 简体中文 in the header
    page.goto(f"{base}/")
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.get_by_role("heading", level=1).inner_text() == "Collections"
    assert page.locator('[data-role="language-apply"]').is_hidden()  # the script submits on change
    _switch(page, "zh-hans")

    # Then the same page is Chinese, and says so
    assert page.url.rstrip("/") == base
    assert page.locator("html").get_attribute("lang") == "zh-Hans"
    assert page.get_by_role("heading", level=1).inner_text() == "集合"
    assert page.locator(".badge--mode").inner_text().strip() == "个人版"
    assert "Create collection" not in page.content()

    # When a collection is created through the Chinese form (labels and buttons in Chinese)
    page.get_by_label("名称").fill("员工手册")
    page.get_by_role("button", name="创建集合").click()
    page.get_by_role("link", name="员工手册").click()
    page.wait_for_url(re.compile(r"/collections/\d+/$"))
    assert page.locator("html").get_attribute("lang") == "zh-Hans"
    assert page.get_by_role("heading", name="检索", exact=True).is_visible()

    # And a Chinese document is uploaded: the scripts' progress and result lines are Chinese
    page.set_input_files(
        "#upload-input",
        files=[
            {
                "name": "休假制度.txt",
                "mimeType": "text/plain",
                "buffer": DOCUMENT.encode(),
            }
        ],
    )
    row = page.locator("tr.doc-row", has_text="休假制度.txt")
    row.wait_for()
    page.wait_for_function(
        "() => { const r = document.querySelector('tr.doc-row');"
        " return r && ['INDEXED', 'FAILED'].includes(r.dataset.status); }",
        timeout=INGEST_TIMEOUT_MS,
    )
    assert row.get_attribute("data-status") == "INDEXED", (
        f"{row.inner_text()}\n{cairn_server.log_tail()}"
    )
    assert row.locator(".status").inner_text().strip() == "已索引"
    assert re.search(r"\d+ 个段落", row.inner_text())
    state = page.locator(".upload-result", has_text="休假制度.txt").locator(".upload-result__state")
    page.wait_for_function(
        "() => /已索引|已上传/.test(document.querySelector('.upload-result__state').textContent)"
    )
    assert re.search(r"已索引|已上传", state.inner_text())
    assert page.locator("#documents-count").inner_text() == "1 个文档"

    # When the user searches 带薪年假多少天, the passage is found and 带薪年假 is highlighted in it
    page.get_by_label("在此集合中检索").fill("带薪年假多少天")
    page.get_by_role("button", name="检索", exact=True).click()
    result = page.locator("#search-results .result").first
    result.wait_for()
    marks = result.locator(".result__text mark").all_inner_texts()
    assert "带薪年假" in marks, f"highlighted: {marks}"
    summary = page.locator("#search-results .results-summary").inner_text()
    assert "“带薪年假多少天”的检索结果" in summary, summary
    assert "第" not in marks  # only the query's terms are marked

    # And the other texts the script builds are Chinese: an empty search, and a query with nothing like it
    page.get_by_label("在此集合中检索").fill("")
    page.get_by_role("button", name="检索", exact=True).click()
    assert page.locator("#search-results [role=alert]").inner_text() == "请输入要检索的内容。"
    page.get_by_label("在此集合中检索").fill("火星探测器轨道参数")
    page.get_by_role("button", name="检索", exact=True).click()
    page.wait_for_function(
        "() => /“火星探测器轨道参数”/.test(document.getElementById('search-results').textContent)"
    )
    other = page.locator("#search-results").inner_text()
    assert re.search(
        r"没有与“火星探测器轨道参数”高度匹配|没有段落与“火星探测器轨道参数”匹配|“火星探测器轨道参数”的检索结果",
        other,
    )
    assert "Nothing in the documents" not in other and "results for" not in other

    # The document page is Chinese too, its facts and dates in the Chinese locale
    page.locator("tr.doc-row a").first.click()
    page.wait_for_url(re.compile(r"/documents/\d+/$"))
    assert page.locator("html").get_attribute("lang") == "zh-Hans"
    assert page.get_by_role("heading", name="段落", exact=True).is_visible()
    assert re.search(r"\d{4}年\d{1,2}月\d{1,2}日", page.locator(".facts").inner_text())

    # When the user switches back, English returns on the same page
    document_url = page.url
    _switch(page, "en")
    assert page.url == document_url
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.get_by_role("heading", name="Passages", exact=True).is_visible()

    assert not page.script_errors, (
        f"JavaScript errors or CSP violations in the page: {page.script_errors}"
    )
