"""Trust boundaries (issue 11, items 4, 6, 8, 9): proxies, loopback, the admin, start-up, hostile JSON."""

from __future__ import annotations

import importlib
import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client
from django.urls import clear_url_caches

from access.models import AuditEvent, User

ROOT = Path(__file__).resolve().parents[2]
PROXY_HEADERS = {"HTTP_X_REAL_IP": "203.0.113.9", "HTTP_X_FORWARDED_FOR": "203.0.113.9",
                 "HTTP_FORWARDED": "for=203.0.113.9", "HTTP_VIA": "1.1 nginx"}


@pytest.fixture
def loopback(db) -> Client:
    return Client(REMOTE_ADDR="127.0.0.1")


# --- item 6: loopback trust and proxy headers ------------------------------------------------


def test_a_loopback_client_is_the_personal_owner(loopback):
    assert loopback.get("/api/v1/collections").status_code == 200
    assert loopback.get("/metrics").status_code == 200


@pytest.mark.parametrize("header", sorted(PROXY_HEADERS))
def test_a_loopback_peer_relaying_for_someone_else_is_not_trusted(loopback, header):
    """An nginx on the same host connects from loopback for everyone: personal sign-in and /metrics refuse it."""
    extra = {header: PROXY_HEADERS[header]}
    assert loopback.get("/api/v1/collections", **extra).status_code in (401, 403)
    assert loopback.get("/metrics", **extra).status_code == 404  # /metrics hides itself from the unauthorised
    assert loopback.get("/", **extra).status_code == 302  # to the login page: not signed in


def test_a_trusted_proxy_speaks_for_its_client(loopback, settings):
    settings.CAIRN_TRUSTED_PROXIES = [ipaddress.ip_network("127.0.0.1/32")]
    # A client elsewhere, relayed by the trusted proxy: not loopback, so not signed in.
    assert loopback.get("/api/v1/collections", HTTP_X_FORWARDED_FOR="203.0.113.9").status_code in (401, 403)
    # A browser on the proxy's own machine: loopback, signed in.
    assert loopback.get("/api/v1/collections", HTTP_X_FORWARDED_FOR="127.0.0.1").status_code == 200
    # X-Forwarded-For is read from the right, skipping trusted proxies: a forged left entry is not the client.
    Client(REMOTE_ADDR="127.0.0.1").post("/login/", {"username": "x", "password": "y"},
                                         HTTP_X_FORWARDED_FOR="127.0.0.1, 198.51.100.7")
    assert AuditEvent.objects.filter(action="auth.login_failed").latest("id").ip == "198.51.100.7"


def test_the_audit_log_takes_the_client_address_from_trusted_proxies_only(db, settings):
    forged = {"HTTP_X_FORWARDED_FOR": "198.51.100.7", "HTTP_X_REAL_IP": "198.51.100.7"}
    Client(REMOTE_ADDR="192.0.2.10").post("/login/", {"username": "mallory", "password": "nope"}, **forged)
    assert AuditEvent.objects.filter(action="auth.login_failed").latest("id").ip == "192.0.2.10"
    settings.CAIRN_TRUSTED_PROXIES = [ipaddress.ip_network("192.0.2.0/24")]
    Client(REMOTE_ADDR="192.0.2.10").post("/login/", {"username": "mallory", "password": "nope"}, **forged)
    assert AuditEvent.objects.filter(action="auth.login_failed").latest("id").ip == "198.51.100.7"


def test_x_forwarded_proto_is_believed_from_trusted_proxies_only(db, settings):
    from access.middleware import ClientAddressMiddleware

    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    seen: list[bool] = []

    def view(request):
        seen.append(request.is_secure())
        from django.http import HttpResponse

        return HttpResponse()

    from django.test import RequestFactory

    middleware = ClientAddressMiddleware(view)
    middleware(RequestFactory().get("/", REMOTE_ADDR="198.51.100.7", HTTP_X_FORWARDED_PROTO="https"))
    settings.CAIRN_TRUSTED_PROXIES = [ipaddress.ip_network("198.51.100.7/32")]
    middleware(RequestFactory().get("/", REMOTE_ADDR="198.51.100.7", HTTP_X_FORWARDED_PROTO="https"))
    assert seen == [False, True]


# --- item 9: hostile JSON ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/collections", "/api/v1/ask", "/api/v1/admin/policy"])
def test_deeply_nested_json_is_a_400_not_a_500(loopback, path):
    body = "[" * 100_000
    response = loopback.generic("POST" if path != "/api/v1/admin/policy" else "PUT", path, body,
                                content_type="application/json")
    assert response.status_code == 400, response.content
    assert "nested too deeply" in response.json()["error"]["message"]


# --- item 4: Django's admin --------------------------------------------------------------------


def test_djangos_admin_is_off_by_default(loopback):
    assert loopback.get("/admin/").status_code == 404
    assert loopback.get("/admin/login/").status_code == 404


@pytest.fixture
def admin_on(settings, db):
    import config.urls

    settings.CAIRN_DJANGO_ADMIN = True
    importlib.reload(config.urls)
    clear_url_caches()
    yield
    settings.CAIRN_DJANGO_ADMIN = False
    importlib.reload(config.urls)
    clear_url_caches()


def test_admin_sign_ins_and_changes_are_audited_when_it_is_on(admin_on):
    User.objects.create_superuser("root", password="correct horse battery staple")
    target = User.objects.create_user("bob", password="hunter2hunter2")
    staff = Client(REMOTE_ADDR="192.0.2.10")  # not loopback: no personal sign-in

    staff.post("/admin/login/", {"username": "root", "password": "wrong", "next": "/admin/"})
    assert staff.post("/admin/login/", {"username": "root", "password": "correct horse battery staple",
                                         "next": "/admin/"}).status_code == 302
    failed = AuditEvent.objects.get(action="auth.login_failed")
    assert failed.detail == {"via": "admin"} and failed.target_id == "root"
    assert AuditEvent.objects.get(action="auth.login").detail == {"via": "admin"}

    page = staff.get(f"/admin/access/user/{target.pk}/change/")
    assert page.status_code == 200
    form = page.context["adminform"].form
    data = {name: form[name].value() for name in form.fields if form[name].value() is not None}
    data = {k: ("" if v is False else v) for k, v in data.items() if not isinstance(v, list)}
    data.update(is_superuser="on", is_staff="on", is_active="on", role="admin",
                attributes='{"clearance": "secret"}', date_joined_0="2026-01-01", date_joined_1="00:00:00",
                _save="Save")
    data.pop("last_login", None)
    data.pop("password", None)
    data.pop("date_joined", None)
    response = staff.post(f"/admin/access/user/{target.pk}/change/", data)
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""

    target.refresh_from_db()
    assert target.is_superuser and target.role == "admin"
    change = AuditEvent.objects.get(action="admin.change")
    assert change.actor_label == "root" and change.target_type == "access.user" and change.target_id == str(target.pk)
    assert change.detail["fields"]["is_superuser"] is True and change.detail["fields"]["role"] == "admin"
    assert change.detail["fields"]["attributes"] == {"clearance": "secret"}


# --- item 8: start-up checks -------------------------------------------------------------------


def _settings_process(tmp_path: Path, code: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CAIRN_", "DJANGO", "DATABASE_URL"))}
    clean.update(CAIRN_DATA_DIR=str(tmp_path), **env)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True,
                          timeout=120)


TEAM = {"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/test", "CAIRN_REDIS_URL": "redis://127.0.0.1:6379/9",
        "CAIRN_ALLOWED_HOSTS": "kb.example.org"}
GOOD_KEY = "k" * 10 + "-Vq3nX8pL2mR7tY1wZ5cB9dF4gH6jK0sA2eU8iO3"


def test_team_mode_refuses_a_short_secret_key(tmp_path):
    result = _settings_process(tmp_path, "import config.settings", **TEAM, CAIRN_SECRET_KEY="x")
    assert result.returncode != 0 and "CAIRN_SECRET_KEY must be at least 50 characters" in result.stderr


def test_a_tls_proxy_must_be_named_and_check_deploy_is_clean_with_the_production_settings(tmp_path):
    result = _settings_process(tmp_path, "import config.settings", **TEAM, CAIRN_SECRET_KEY=GOOD_KEY,
                               CAIRN_BEHIND_TLS_PROXY="1")
    assert result.returncode != 0 and "CAIRN_TRUSTED_PROXIES" in result.stderr
    production = {**TEAM, "CAIRN_SECRET_KEY": GOOD_KEY, "CAIRN_BEHIND_TLS_PROXY": "1",
                  "CAIRN_TRUSTED_PROXIES": "127.0.0.1"}
    check = _settings_process(
        tmp_path, "import django, sys; sys.argv = ['manage.py', 'check', '--deploy', '--fail-level', 'WARNING']; "
        "from django.core.management import execute_from_command_line; execute_from_command_line(sys.argv)",
        **production, DJANGO_SETTINGS_MODULE="config.settings")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "no issues" in check.stdout


def test_behind_a_tls_proxy_the_team_shape_sends_hsts_and_redirects_plain_http(tmp_path):
    code = """
import django, os
django.setup()
from django.test import Client
c = Client(REMOTE_ADDR="127.0.0.1", SERVER_NAME="kb.example.org")
secure = c.get("/api/v1/health", HTTP_X_FORWARDED_PROTO="https")
plain = c.get("/login/")
probe = c.get("/api/v1/health")
print(secure.status_code, secure.headers.get("Strict-Transport-Security"))
print(plain.status_code, plain.headers.get("Location"))
print(probe.status_code)
"""
    result = _settings_process(tmp_path, code, **TEAM, CAIRN_SECRET_KEY=GOOD_KEY, CAIRN_BEHIND_TLS_PROXY="1",
                               CAIRN_TRUSTED_PROXIES="127.0.0.1", DJANGO_SETTINGS_MODULE="config.settings")
    assert result.returncode == 0, result.stderr
    secure, plain, probe = result.stdout.split("\n")[:3]
    assert secure == "200 max-age=31536000; includeSubDomains"
    assert plain == "301 https://kb.example.org/login/"
    assert probe == "200"  # health probes from inside the network are not redirected
    off = _settings_process(tmp_path, code, **TEAM, CAIRN_SECRET_KEY=GOOD_KEY, CAIRN_BEHIND_TLS_PROXY="1",
                            CAIRN_TRUSTED_PROXIES="127.0.0.1", CAIRN_HSTS_SECONDS="0", CAIRN_SSL_REDIRECT="0",
                            DJANGO_SETTINGS_MODULE="config.settings")
    assert off.stdout.split("\n")[:2] == ["200 None", "200 None"]
