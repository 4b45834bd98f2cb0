"""The OpenAPI schema at ``/api/schema/``: complete, valid, served with a CSP-safe Swagger UI, and true.

"True" is schemathesis' job: it generates requests from the schema (valid
and invalid ones) against a live server and fails on any 5xx, any status or
content type the schema does not allow, and any body that contradicts it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.validation import validate_schema

from access.models import User
from access.services import SYSTEM, api_key_create
from kb.services import collection_create

pytestmark = pytest.mark.django_db(transaction=True)


def api_routes() -> set[str]:
    """Every /api/v1/ REST route (a DRF view) as an OpenAPI path template; /api/v1/health is /healthz's alias."""
    routes: set[str] = set()

    def walk(patterns: list[URLPattern | URLResolver], prefix: str) -> None:
        for pattern in patterns:
            text = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, text)
            elif text.startswith("api/v1/") and hasattr(pattern.callback, "cls"):
                routes.add("/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", text))

    walk(get_resolver().url_patterns, "")
    return routes


def test_every_api_route_is_described_with_bodies_and_the_error_shape():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    validate_schema(schema)  # the OpenAPI 3 JSON schema (raises on an invalid document)
    assert api_routes() == set(schema["paths"]), api_routes() ^ set(schema["paths"])
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            assert operation.get("summary"), (method, path)
            assert responses["default"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"}, (method, path)
            ok = [code for code in responses if code.startswith("2")]
            assert ok, (method, path)
            if ok != ["204"] and path not in ("/api/v1/documents/{document_id}/download",
                                              "/api/v1/documents/{document_id}/pages/{page}.png",
                                              "/api/v1/collections/{collection_id}/feedback/export"):
                body = responses[ok[0]]["content"]["application/json"]["schema"]
                assert body.get("$ref", "").startswith("#/components/schemas/"), (method, path, body)
            if method in ("post", "put") and not path.endswith(("/reprocess", "/evaluations", "/restore", "/tune/apply")):
                assert "requestBody" in operation, (method, path)
    names = set(schema["components"]["schemas"])
    assert {"Error", "SearchResponse", "AnswerResponse", "Document", "CreatedKey", "AskRequest"} <= names, names
    assert {"apiKey", "idpToken"} <= set(schema["components"]["securitySchemes"])


def test_the_schema_and_the_docs_page_are_served_without_inline_script_or_cdn(settings):
    settings.CAIRN_MODE = "team"
    browser = Client(REMOTE_ADDR="192.0.2.50")
    schema = browser.get("/api/schema/")
    assert schema.status_code == 200
    assert "/api/v1/search" in yaml.safe_load(schema.content)["paths"]
    page = browser.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all("src=" in attrs and not body.strip() for attrs, body in scripts), scripts
    assert not re.search(r"\son[a-z]+=", html)  # no inline event handlers either
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert urls and not [url for url in urls if url.startswith(("http:", "https:", "//"))], urls
    for url in urls:
        response = browser.get(url.replace("&amp;", "&"))
        assert response.status_code == 200, url
        if "script=" in url:
            assert b"SwaggerUIBundle" in b"".join(response) if response.streaming else response.content


@pytest.mark.timeout(300)
def test_schemathesis_finds_no_server_error_and_no_answer_that_contradicts_the_schema(live_server, settings,
                                                                                       isolated_storage, tmp_path):
    settings.CAIRN_MODE = "team"
    settings.CAIRN_RATE_LIMIT = None  # schemathesis is fast; a limit would only add 429s
    from access import ratelimit

    ratelimit.reset()  # (the conftest fixture resets it again afterwards)
    owner = User.objects.create(username="fuzzer", role=User.Role.ADMIN)
    collection_create(actor=SYSTEM, owner=owner, name="Fuzzed")
    _, secret = api_key_create(user=owner, name="schemathesis", actor=SYSTEM)
    command = [
        str(Path(sys.executable).parent / "schemathesis"), "run", f"{live_server.url}/api/schema/",
        "--header", f"Authorization: Bearer {secret}",
        "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                    "response_schema_conformance",
        "--phases", "examples,fuzzing", "--max-examples", "12", "--workers", "1",
        "--request-timeout", "30",
        "--generation-deterministic",
        # Deleting the only collection (or key) early would leave little to test; they are covered by
        # their own tests, and still checked here for a 5xx through the examples phase of DELETE on others.
        "--exclude-path-regex", r"^/api/v1/(collections/\{collection_id\}|keys/\{prefix\})$",
    ]
    # (in a scratch directory: schemathesis keeps a cache in its working directory)
    run = subprocess.run(command, capture_output=True, text=True, timeout=280, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
