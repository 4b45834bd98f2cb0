"""A strict Content-Security-Policy on every page, and pages that need nothing it forbids."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from access.models import User

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def browser(settings, isolated_storage):
    settings.CAIRN_MODE = "team"
    user = User.objects.create(username="ana", role=User.Role.ADMIN)
    client = Client(REMOTE_ADDR="192.0.2.80")
    client.force_login(user)
    return client


def test_every_page_carries_a_strict_policy_and_has_no_inline_script_or_style(browser):
    collection = browser.post("/api/v1/collections", {"name": "Plans"}, content_type="application/json").json()
    pages = ["/", f"/collections/{collection['id']}/", "/settings/keys/", "/audit/", "/api/docs/", "/login/",
             "/no-such-page/"]
    for path in pages:
        response = browser.get(path)
        policy = response["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "style-src 'self'" in policy, path
        assert "frame-ancestors 'none'" in policy and "object-src 'none'" in policy, path
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy and "http" not in policy, path
        html = response.content.decode()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), path  # every script is a file
        assert not re.search(r"\sstyle=\"", html) and "<style" not in html, path
        assert not re.search(r"\son[a-z]+=\"", html), path
    assert "Content-Security-Policy" in browser.get("/api/v1/collections")
