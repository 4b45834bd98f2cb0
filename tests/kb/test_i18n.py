"""English and Simplified Chinese: catalogues complete and compiled, pages and messages in the reader's language.

Given the zh_Hans catalogues in locale/, when a page, an API error or a search is asked for in Chinese
(Accept-Language or the header's switcher), then what a person reads is Chinese and <html lang> says so.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.test import Client
from django.utils import translation

from access.models import User
from access.services import SYSTEM
from kb import services
from kb.processing_messages import processing_message, status_label
from kb.retrieval.highlight import highlight_spans, highlight_terms
from tests.kb.conftest import upload

LOCALE = Path(django_settings.BASE_DIR) / "locale" / "zh_Hans" / "LC_MESSAGES"
DOMAINS = ("django", "djangojs")
ZH = {"HTTP_ACCEPT_LANGUAGE": "zh-CN,zh;q=0.9,en;q=0.5"}


# --- the catalogues ---------------------------------------------------------------------------------------------


def _entries(po: Path) -> list[dict[str, object]]:
    """The entries of a .po file: msgctxt, msgid, msgid_plural, msgstr (plural forms in a list), flags."""
    entries: list[dict[str, object]] = []
    current: dict[str, object] = {}
    key = ""

    def close() -> None:
        nonlocal current
        if "msgid" in current:
            entries.append(current)
        current = {}

    for raw in po.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line:
            close()
            continue
        if line.startswith("#,"):
            current.setdefault("flags", set()).update(f.strip() for f in line[2:].split(","))  # type: ignore[union-attr]
            continue
        if line.startswith("#"):
            continue
        match = re.match(r'(msgctxt|msgid_plural|msgid|msgstr(?:\[\d+\])?) (".*")$', line)
        if match:
            key = match.group(1)
            current[key] = _unquote(match.group(2))
        elif line.startswith('"'):
            current[key] = str(current[key]) + _unquote(line)
    close()
    return entries


def _unquote(text: str) -> str:
    body = text[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


@pytest.mark.parametrize("domain", DOMAINS)
def test_every_msgid_of_the_chinese_catalogue_has_a_translation(domain):
    entries = [e for e in _entries(LOCALE / f"{domain}.po") if e["msgid"]]
    assert len(entries) > 50  # the catalogue is the real one, not an empty file
    missing = [
        (e.get("msgctxt"), e["msgid"])
        for e in entries
        if "fuzzy" in e.get("flags", set())  # type: ignore[operator]
        or not all(str(e[k]).strip() for k in e if str(k).startswith("msgstr"))
    ]
    assert not missing, f"{domain}.po: {len(missing)} msgids untranslated or fuzzy:\n" + "\n".join(
        f"  [{ctx}] {msgid!r}" if ctx else f"  {msgid!r}" for ctx, msgid in missing
    )


@pytest.mark.parametrize("domain", DOMAINS)
def test_the_placeholders_of_each_translation_match_its_msgid(domain):
    placeholder = re.compile(r"%\(\w+\)s|%s")
    wrong = []
    for e in _entries(LOCALE / f"{domain}.po"):
        if not e["msgid"]:
            continue
        wanted = sorted(placeholder.findall(str(e["msgid"])))
        for key in (k for k in e if str(k).startswith("msgstr")):
            if sorted(placeholder.findall(str(e[key]))) != wanted and not (
                "msgid_plural" in e and "%s" not in wanted and not wanted
            ):
                wrong.append((e["msgid"], e[key]))
    assert not wrong, wrong


@pytest.mark.parametrize("domain", DOMAINS)
def test_the_committed_mo_files_are_compiled_from_the_po_files(domain, tmp_path):
    msgfmt = shutil.which("msgfmt")
    if msgfmt is None:
        pytest.skip(
            "msgfmt (GNU gettext) is not installed: cannot check the .mo files against the .po files"
        )
    fresh = tmp_path / f"{domain}.mo"
    subprocess.run([msgfmt, "--check", "-o", str(fresh), str(LOCALE / f"{domain}.po")], check=True)
    committed = LOCALE / f"{domain}.mo"
    assert committed.exists(), f"{committed} is missing: run manage.py compilemessages"
    assert committed.read_bytes() == fresh.read_bytes(), (
        f"{committed.name} is older than {domain}.po: run `python manage.py compilemessages -l zh_Hans` and commit it"
    )


# --- templates: nothing visible outside the translation tags -----------------------------------------------------

TEMPLATES = Path(django_settings.BASE_DIR) / "templates"
# Words that are not English to translate: the brand, metric names, a policy expression shown as an example.
_NEUTRAL_WORDS = re.compile(
    r"\bCairn\b|\bSHA-256\b|\bnDCG@10\b|\bRecall@10\b|\bMRR@10\b"
    r"|user\.department == doc\.department and user\.clearance >= doc\.sensitivity"
    # File formats by their own names, and an example of the key=value syntax a user types as it is.
    r"|^(PDF|Word|HTML|Markdown)$|^department=finance, region=emea$"
)
_VISIBLE_ATTRS = ("title", "aria-label", "placeholder", "alt")


class _TextFinder(HTMLParser):
    """Text nodes and visible attributes of a template with every {% … %} / {{ … }} removed first."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script"):
            self._skip += 1
        for name, value in attrs:
            if (
                name in _VISIBLE_ATTRS
                and value
                and re.search(r"[A-Za-z]{2,}", _NEUTRAL_WORDS.sub("", value))
            ):
                self.found.append(f"{name}={value!r}")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        text = data.strip()
        if self._skip or not re.search(r"[A-Za-z]{2,}", _NEUTRAL_WORDS.sub("", text)):
            return
        self.found.append(text)


def _untranslated(source: str) -> list[str]:
    # Translated text goes; so do comments and every other tag or variable (their output is data, not UI text).
    source = re.sub(
        r"{%\s*blocktranslate.*?{%\s*endblocktranslate\s*%}", "", source, flags=re.DOTALL
    )
    source = re.sub(r"{%\s*comment\s*%}.*?{%\s*endcomment\s*%}", "", source, flags=re.DOTALL)
    # The page's data-* attributes on <main> (a block that holds attributes, not text).
    source = re.sub(r"{%\s*block main_attrs\s*%}.*?{%\s*endblock\s*%}", "", source, flags=re.DOTALL)
    source = re.sub(r"{#.*?#}|{%.*?%}|{{.*?}}", "", source, flags=re.DOTALL)
    finder = _TextFinder()
    finder.feed(source)
    return finder.found


def test_the_text_finder_reports_untranslated_text():
    # The check below must be able to fail: English left outside the tags is found, translated text is not.
    assert _untranslated('<p>Hello there</p><input placeholder="Type here">') == [
        "placeholder='Type here'",
        "Hello there",
    ] or _untranslated('<p>Hello there</p><input placeholder="Type here">') == [
        "Hello there",
        "placeholder='Type here'",
    ]
    assert (
        _untranslated(
            '<p>{% translate "Hello there" %}</p><b title="{% translate \'x y\' %}">{{ name }}</b>'
        )
        == []
    )


@pytest.mark.parametrize(
    "template",
    sorted(
        str(p.relative_to(TEMPLATES))
        for p in TEMPLATES.rglob("*.html")
        if not p.match("drf_spectacular/*")
    ),
)
def test_no_template_has_visible_text_outside_the_translation_tags(template):
    found = _untranslated((TEMPLATES / template).read_text(encoding="utf-8"))
    assert not found, f"{template}: untranslated text: {found}"


# --- pages in Chinese ---------------------------------------------------------------------------------------------


@pytest.fixture
def team(isolated_storage, settings):
    settings.CAIRN_MODE = "team"
    owner = User.objects.create(username="li")
    collection = services.collection_create(actor=SYSTEM, owner=owner, name="员工手册")
    client = Client(REMOTE_ADDR="10.0.0.5")  # not loopback: no personal-mode sign-in
    client.force_login(owner)
    return client, collection


@pytest.mark.django_db
def test_accept_language_chinese_gives_a_chinese_page_with_a_bcp47_lang(team):
    client, collection = team
    html = client.get("/", **ZH).content.decode()
    assert '<html lang="zh-Hans">' in html
    assert "集合" in html and "新建集合" in html and "创建集合" in html
    assert "Create collection" not in html and "New collection" not in html
    english = client.get("/", HTTP_ACCEPT_LANGUAGE="en-GB,en;q=0.9").content.decode()
    assert '<html lang="en">' in english and "Create collection" in english


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/", "collection", "/settings/keys/", "/no-such-page/"])
def test_main_pages_in_chinese_keep_no_known_english_phrase(team, path):
    client, collection = team
    url = f"/collections/{collection.pk}/" if path == "collection" else path
    response = client.get(url, **ZH)
    html = response.content.decode()
    assert '<html lang="zh-Hans">' in html
    visible = re.sub(
        r"<[^>]+>", " ", re.sub(r"<(script|style)\b.*?</\1>", "", html, flags=re.DOTALL)
    )
    for phrase in (
        "Skip to content",
        "Log out",
        "Search",
        "Documents",
        "Upload",
        "Delete",
        "Collections",
        "API keys",
        "Not found",
        "Name",
        "Ask",
        "Question",
        "Create key",
        "No keys yet",
        "Sharing",
    ):
        assert not re.search(rf"\b{phrase}\b", visible), f"{url}: {phrase!r} left in English"


@pytest.mark.django_db
def test_the_switcher_sets_the_language_and_returns_to_the_same_page(team):
    client, collection = team
    page = f"/collections/{collection.pk}/?q=x"
    response = client.post("/i18n/setlang/", {"language": "zh-hans", "next": page})
    assert response.status_code == 302 and response["Location"] == page
    assert response.cookies[django_settings.LANGUAGE_COOKIE_NAME].value == "zh-hans"
    # The choice wins over the browser's language from then on.
    html = client.get(page, HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert '<html lang="zh-Hans">' in html and "检索" in html
    client.post("/i18n/setlang/", {"language": "en", "next": page})
    assert '<html lang="en">' in client.get(page, **ZH).content.decode()


@pytest.mark.django_db
def test_the_switcher_is_a_csrf_protected_post_form_without_inline_script(team):
    client, _ = team
    html = client.get("/", **ZH).content.decode()
    form = re.search(r'<form[^>]*data-role="language-switcher".*?</form>', html, re.DOTALL)
    assert (
        form is not None
        and 'method="post"' in form.group(0)
        and "csrfmiddlewaretoken" in form.group(0)
    )
    assert (
        'value="zh-hans"' in form.group(0)
        and "简体中文" in form.group(0)
        and "English" in form.group(0)
    )
    assert "onchange" not in html and "<script>" not in html
    assert re.search(
        r'<script src="/jsi18n/[^"]*" defer></script>\s*<script src="[^"]*language\.js"', html
    )


@pytest.mark.django_db
def test_the_javascript_catalogue_follows_the_language(team):
    client, _ = team
    chinese = client.get("/jsi18n/", **ZH).content.decode()
    assert "\\u68c0\\u7d22\\u4e2d" in chinese or "检索中" in chinese  # "Searching…"
    assert "ngettext" in chinese and "pluralidx" in chinese
    assert "检索中" not in client.get("/jsi18n/", HTTP_ACCEPT_LANGUAGE="en").content.decode()


@pytest.mark.django_db
def test_api_errors_come_back_in_the_readers_language(team):
    client, collection = team
    missing = client.get("/api/v1/collections/999999", **ZH)
    assert missing.status_code == 404 and missing.json()["error"]["message"] == "集合不存在。"
    empty = client.patch(
        f"/api/v1/collections/{collection.pk}",
        {"name": "  "},
        content_type="application/json",
        **ZH,
    )
    assert empty.status_code == 400 and "不能为空" in empty.json()["error"]["message"]
    nobody = client.post(
        f"/api/v1/collections/{collection.pk}/members",
        {"user": "nobody", "role": "viewer"},
        content_type="application/json",
        **ZH,
    )
    assert (
        nobody.status_code == 400
        and nobody.json()["error"]["message"] == "user: 用户不存在：'nobody'。"
    )
    assert client.get("/api/v1/nowhere", **ZH).json()["error"]["message"] == "资源不存在。"
    english = client.get("/api/v1/collections/999999", HTTP_ACCEPT_LANGUAGE="en")
    assert english.json()["error"]["message"] == "No such collection."


@pytest.mark.django_db
def test_dates_on_pages_follow_the_locale(team):
    client, collection = team
    html = client.get("/", **ZH).content.decode()
    assert re.search(r"创建于 \d{4}年\d{1,2}月\d{1,2}日", html), html[:2000]


# --- stored processing messages, translated when shown ---------------------------------------------------------


def test_stored_processing_messages_are_translated_when_shown():
    with translation.override("zh-hans"):
        assert processing_message("Embedding 3 of 10 passages") == "正在向量化段落：3 / 10"
        assert (
            processing_message(
                "Processing failed after 3 attempts. Last error: ParseError: The PDF is password-protected"
            )
            == "尝试 3 次后处理失败。最后一次错误：ParseError: 该 PDF 受密码保护。"
        )
        assert processing_message("The file looks like binary data of an unsupported type") == (
            "该文件似乎是不支持类型的二进制数据。"
        )
        assert processing_message("something nobody listed") == "something nobody listed"
        assert status_label("INDEXED") == "已索引"
    with translation.override("en"):
        assert processing_message("Embedding 3 of 10 passages") == "Embedding 3 of 10 passages"
        assert status_label("INDEXED") == "INDEXED"


# --- highlighting by the index's own terms -------------------------------------------------------------------------


def test_a_chinese_query_highlights_the_words_its_bigrams_match():
    terms = highlight_terms("带薪年假多少天")
    assert highlight_spans(terms, "员工每年享有带薪年假十五天。") == ["带薪年假"]
    assert highlight_spans(terms, "这段话与此无关。") == []


def test_english_highlights_follow_stems_and_whole_words():
    terms = highlight_terms("Policies")
    assert set(highlight_spans(terms, "The POLICY and its policies; apolitical")) == {
        "POLICY",
        "policies",
    }


@pytest.mark.django_db(transaction=True)  # the upload's processing runs on commit
def test_search_gives_the_query_terms_and_the_pieces_to_highlight(api, collection_id):
    text = "年假制度\n\n员工入职满一年后享有带薪年假，每年十五天。病假另计。".encode()
    assert upload(api, collection_id, "年假.txt", text).status_code == 201
    response = api.get("/api/v1/search", {"q": "带薪年假多少天", "collection": collection_id})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["query_terms"][:3] == ["带薪", "薪年", "年假"]
    assert body["results"] and "带薪年假" in body["results"][0]["highlights"]


def test_the_fixed_no_good_match_answer_is_in_the_askers_language():
    from kb.answering import NO_GOOD_MATCH_ANSWER, no_good_match_answer

    with translation.override("zh-hans"):
        assert no_good_match_answer().answer.startswith("您的文档中没有合适的匹配")
    with translation.override("en"):
        assert no_good_match_answer().answer == NO_GOOD_MATCH_ANSWER


@pytest.mark.django_db(transaction=True)
def test_the_extractive_label_is_in_the_askers_language_plain_and_streamed(api, collection_id):
    """The backend writes its label in English (a worker knows no request's language); the answer
    leaving the web is in the asker's."""
    text = b"# Leave\n\nEmployees get thirty days of paid leave per year."
    assert upload(api, collection_id, "leave.md", text).status_code == 201
    ask = {"question": "How many days of paid leave do employees get?", "collection": collection_id}
    english = api.post("/api/v1/ask", ask, format="json", HTTP_ACCEPT_LANGUAGE="en")
    assert english.json()["answer"].startswith("Extracts from your documents"), english.json()
    chinese = api.post("/api/v1/ask", ask, format="json", HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert chinese.json()["answer"].startswith("以下摘录自您的文档"), chinese.json()
    assert "thirty days" in chinese.json()["answer"]
    streamed = api.post("/api/v1/ask", {**ask, "stream": True}, format="json", HTTP_ACCEPT_LANGUAGE="zh-hans")
    body = b"".join(streamed.streaming_content).decode()
    first_token = next(line for line in body.split("\n\n") if line.startswith("event: token"))
    assert "以下摘录自您的文档" in first_token and "Extracts from" not in body, body[:500]
