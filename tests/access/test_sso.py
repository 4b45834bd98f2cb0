"""Single sign-on against a real OpenID provider (npm ``oidc-provider``, started here on loopback).

The provider issues the tokens and signs the users in through its own pages;
nothing about it is mocked.  Covered: IdP JWT access tokens on the API
(claims → user, groups, attributes; every listed attack refused with 401),
key rotation, the browser sign-in flow (PKCE, state, nonce) through
``/login/oidc/``, group synchronisation by channel, deactivation, and
scoped API keys.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import time
from urllib.parse import urlsplit

import pytest
import requests
from django.contrib.auth.models import Group
from django.test import Client
from django.utils import timezone
from joserfc import jwt
from joserfc.jwk import RSAKey
from rest_framework.test import APIClient

from access import oidc
from access.administration import group_member_add
from access.models import AuditEvent, GroupMembership, Source, User
from access.services import SYSTEM, api_key_create
from kb.services import collection_create, collection_share
from tests.oidc.provider import AUDIENCE, CLIENT_ID, CLIENT_SECRET, OidcProvider, node_ready

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.skipif(node_ready() is not None, reason=str(node_ready()))]

CALLBACK = "http://testserver/login/oidc/callback"
SCIM_TOKEN = "scim-token-for-the-tests-0123456789abcdef"
API_CALLBACK = "http://127.0.0.1:9/cb"
ACCOUNTS = {
    "alice": {"preferred_username": "alice", "groups": ["finance"], "dept": "finance", "clearance": "internal"},
    "bob": {"preferred_username": "bob", "groups": []},
}


@pytest.fixture(scope="module")
def idp(tmp_path_factory):
    provider = OidcProvider(tmp_path_factory.mktemp("oidc"), [CALLBACK, API_CALLBACK], ACCOUNTS).start()
    yield provider
    provider.stop()


@pytest.fixture
def sso(settings, idp, isolated_storage):
    idp.set_accounts(ACCOUNTS)
    settings.CAIRN_MODE = "team"
    settings.CAIRN_OIDC_ISSUER = idp.issuer
    settings.CAIRN_OIDC_CLIENT_ID = CLIENT_ID
    settings.CAIRN_OIDC_CLIENT_SECRET = CLIENT_SECRET
    settings.CAIRN_OIDC_AUDIENCE = AUDIENCE
    settings.CAIRN_OIDC_ATTRIBUTE_CLAIMS = {"department": "dept", "clearance": "clearance"}
    oidc._provider = None
    from access import authentication
    authentication._synced.clear()
    return idp


@pytest.fixture
def finance_collection():
    owner = User.objects.create(username="owner")
    collection = collection_create(actor=SYSTEM, owner=owner, name="Finance handbook")
    collection_share(actor=SYSTEM, collection=collection, principal=Group.objects.get_or_create(name="finance")[0],
                     role="viewer")
    return collection


def bearer(token: str) -> APIClient:
    client = APIClient(REMOTE_ADDR="192.0.2.20")  # not loopback: no personal-mode sign-in
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def collection_ids(client: APIClient) -> list[int]:
    response = client.get("/api/v1/collections")
    assert response.status_code == 200, response.content
    body = response.json()
    items = body["results"]
    return [item["id"] for item in items]


def test_an_idp_access_token_signs_in_on_the_api_with_groups_and_attributes(sso, finance_collection):
    token = sso.sign_in("alice", API_CALLBACK)["access_token"]
    assert collection_ids(bearer(token)) == [finance_collection.pk]
    alice = User.objects.get(username="alice")
    assert alice.idp_subject == f"{sso.issuer} alice"
    assert alice.attributes == {"department": "finance", "clearance": "internal"}
    assert alice.attribute_sources == {"department": "idp", "clearance": "idp"}
    assert set(GroupMembership.objects.filter(user=alice).values_list("group__name", "source")) == {("finance", "idp")}
    assert AuditEvent.objects.filter(action="auth.token", actor_id=alice.pk, outcome="allowed").exists()


def test_leaving_a_group_at_the_idp_removes_access_but_keeps_what_an_admin_gave(sso, finance_collection):
    first = sso.sign_in("alice", API_CALLBACK)["access_token"]
    assert collection_ids(bearer(first)) == [finance_collection.pk]
    alice = User.objects.get(username="alice")
    auditors = Group.objects.create(name="auditors")
    group_member_add(actor=SYSTEM, group=auditors, user=alice)

    sso.set_accounts({**ACCOUNTS, "alice": {**ACCOUNTS["alice"], "groups": ["auditors"], "dept": "legal"}})
    second = sso.sign_in("alice", API_CALLBACK)["access_token"]
    assert collection_ids(bearer(second)) == []          # finance came from the IdP only
    alice.refresh_from_db()
    assert set(alice.groups.values_list("name", flat=True)) == {"auditors"}
    assert set(GroupMembership.objects.filter(user=alice).values_list("source", flat=True)) == {"admin", "idp"}
    assert alice.attributes["department"] == "legal"

    sso.set_accounts({**ACCOUNTS, "alice": {**ACCOUNTS["alice"], "groups": []}})
    third = sso.sign_in("alice", API_CALLBACK)["access_token"]
    assert collection_ids(bearer(third)) == []
    alice.refresh_from_db()
    assert list(alice.groups.values_list("name", flat=True)) == ["auditors"]  # the admin's membership stays


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(sso: OidcProvider, **changes) -> dict:
    now = int(time.time())
    return {"iss": sso.issuer, "aud": AUDIENCE, "sub": "alice", "preferred_username": "alice", "iat": now,
            "exp": now + 300, **changes}


def _signed(sso: OidcProvider, claims: dict, key=None, header: dict | None = None) -> str:
    key = key or sso.key
    return jwt.encode({"alg": "RS256", "kid": key.kid, **(header or {})}, claims, key)


def test_every_listed_token_attack_is_refused_with_401_and_audited(sso):
    good = sso.sign_in("alice", API_CALLBACK)["access_token"]
    assert bearer(good).get("/api/v1/collections").status_code == 200

    header, payload, _ = good.split(".")
    public_pem = sso.key.as_pem(private=False)
    signing_input = f"{_b64({'alg': 'HS256', 'kid': sso.key.kid})}.{_b64(_claims(sso))}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    hs_with_public_key = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    stranger = RSAKey.generate_key(2048, parameters={"kid": "not-published"})
    now = int(time.time())
    attacks = {
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.",
        "HS256 signed with the public key": hs_with_public_key,
        "unknown kid": _signed(sso, _claims(sso), key=stranger),
        "wrong issuer": _signed(sso, _claims(sso, iss="https://evil.example")),
        "wrong audience": _signed(sso, _claims(sso, aud="https://other.example/api")),
        "expired": _signed(sso, _claims(sso, iat=now - 4000, exp=now - 3000)),
        "not yet valid": _signed(sso, _claims(sso, nbf=now + 3000)),
        "issued in the future": _signed(sso, _claims(sso, iat=now + 3000)),
        "tampered payload": f"{header}.{_b64({**_claims(sso), 'sub': 'root'})}.{good.split('.')[2]}",
        "garbage": "not-a-token-at-all",
        "three dots of garbage": "e30.e30.e30",
    }
    before = AuditEvent.objects.filter(action="auth.token", outcome="denied").count()
    for name, token in attacks.items():
        response = bearer(token).get("/api/v1/collections")
        assert response.status_code == 401, (name, response.status_code, response.content)
        assert response.json()["error"]["message"], name
    assert AuditEvent.objects.filter(action="auth.token", outcome="denied").count() == before + len(attacks)

    # A properly signed token for a deactivated user is refused too, at once.
    User.objects.filter(username="alice").update(is_active=False)
    assert bearer(good).get("/api/v1/collections").status_code == 401


def test_a_rotated_provider_key_is_fetched_again(sso, monkeypatch):
    monkeypatch.setattr(oidc, "REFRESH_MIN_SECONDS", 0)
    assert bearer(sso.sign_in("alice", API_CALLBACK)["access_token"]).get("/api/v1/collections").status_code == 200
    sso.rotate_key()
    assert bearer(sso.sign_in("alice", API_CALLBACK)["access_token"]).get("/api/v1/collections").status_code == 200


def _browser_sign_in(client: Client, login: str) -> requests.Response | object:
    """The browser's walk: Cairn → the provider's pages → back to Cairn's callback."""
    start = client.get("/login/oidc/?next=/collections/1/")
    assert start.status_code == 302, start.content
    location = start["Location"]
    query = dict(part.split("=", 1) for part in urlsplit(location).query.split("&"))
    assert query["code_challenge_method"] == "S256" and query["state"] and query["nonce"]
    http = requests.Session()
    response = http.get(location, allow_redirects=False, timeout=10)
    for _ in range(12):
        target = response.headers.get("Location", "")
        if target.startswith(CALLBACK):
            return client.get("/login/oidc/callback?" + urlsplit(target).query)
        if response.status_code in (302, 303):
            response = http.get(requests.compat.urljoin(response.url, target), allow_redirects=False, timeout=10)
        else:
            prompt = "login" if 'name="login"' in response.text else "consent"
            data = {"prompt": "login", "login": login, "password": "x"} if prompt == "login" else {"prompt": "consent"}
            response = http.post(response.url, data=data, allow_redirects=False, timeout=10)
    raise AssertionError("the provider never sent the browser back")


def test_browser_sign_in_with_pkce_state_and_nonce(sso, finance_collection):
    client = Client(REMOTE_ADDR="192.0.2.30")
    page = client.get("/login/")
    assert b"Sign in with" in page.content
    done = _browser_sign_in(client, "alice")
    assert done.status_code == 302 and done["Location"] == "/collections/1/"
    assert client.get("/api/v1/collections").status_code == 200
    alice = User.objects.get(username="alice")
    event = AuditEvent.objects.filter(action="auth.login", actor_id=alice.pk).latest("id")
    assert event.detail == {"via": "oidc", "subject": "alice"}

    # Deactivated: the session ends on the next request; signing in again is refused and audited.
    User.objects.filter(pk=alice.pk).update(is_active=False)
    assert client.get("/api/v1/collections").status_code in (401, 403)
    again = _browser_sign_in(Client(REMOTE_ADDR="192.0.2.30"), "alice")
    assert again.status_code == 403 and b"deactivated" in again.content
    assert AuditEvent.objects.filter(action="auth.login_failed", target_id="alice", outcome="denied").exists()


def test_a_forged_state_is_refused(sso):
    client = Client(REMOTE_ADDR="192.0.2.31")
    client.get("/login/oidc/")
    response = client.get("/login/oidc/callback?code=abc&state=forged")
    assert response.status_code == 400
    assert AuditEvent.objects.filter(action="auth.login_failed", outcome="denied",
                                     rule__startswith="oidc:").exists()


def test_password_sign_in_can_be_switched_off(sso, settings):
    User.objects.create_user(username="carol", password="a long password 123")
    settings.CAIRN_PASSWORD_LOGIN = False
    client = Client(REMOTE_ADDR="192.0.2.32")
    page = client.get("/login/")
    assert b'name="password"' not in page.content and b"Sign in with" in page.content
    refused = client.post("/login/", {"username": "carol", "password": "a long password 123"})
    assert refused.status_code == 403
    assert client.get("/api/v1/collections").status_code in (401, 403)


# --- scoped API keys -------------------------------------------------------------------------


def test_scoped_keys_read_only_collection_limited_and_expiring(isolated_storage, settings):
    settings.CAIRN_MODE = "team"
    dana = User.objects.create(username="dana")
    first = collection_create(actor=SYSTEM, owner=dana, name="A")
    second = collection_create(actor=SYSTEM, owner=dana, name="B")

    _, limited = api_key_create(user=dana, name="only A", actor=SYSTEM, collection_ids=[first.pk])
    assert collection_ids(bearer(limited)) == [first.pk]
    assert bearer(limited).get(f"/api/v1/collections/{second.pk}").status_code == 404
    assert bearer(limited).get("/api/v1/search", {"q": "anything", "collection": second.pk}).status_code == 404

    _, read_only = api_key_create(user=dana, name="reader", actor=SYSTEM, read_only=True)
    assert sorted(collection_ids(bearer(read_only))) == sorted([first.pk, second.pk])
    refused = bearer(read_only).post("/api/v1/collections", {"name": "C"}, format="json")
    assert refused.status_code == 403 and "read-only" in refused.json()["error"]["message"]
    assert bearer(read_only).delete(f"/api/v1/collections/{first.pk}").status_code == 403

    _, expired = api_key_create(user=dana, name="old", actor=SYSTEM,
                                expires_at=timezone.now() - dt.timedelta(minutes=1))
    assert bearer(expired).get("/api/v1/collections").status_code == 401
    _, full = api_key_create(user=dana, name="full", actor=SYSTEM)
    assert bearer(full).post("/api/v1/collections", {"name": "C"}, format="json").status_code == 201


def test_membership_channels_each_change_only_their_own(isolated_storage):
    from access.identity import memberships_sync
    erin = User.objects.create(username="erin")
    group = Group.objects.create(name="ops")
    group_member_add(actor=SYSTEM, group=group, user=erin)
    memberships_sync(actor=SYSTEM, user=erin, names=["ops", "night-shift"], source=Source.SCIM)
    assert set(erin.groups.values_list("name", flat=True)) == {"ops", "night-shift"}
    memberships_sync(actor=SYSTEM, user=erin, names=[], source=Source.SCIM)
    assert list(erin.groups.values_list("name", flat=True)) == ["ops"]


def test_the_whole_story_scim_creates_idp_signs_in_scim_deactivates(sso, settings):
    """Provisioned by SCIM into a group that has a collection, the person signs in through the IdP (browser,
    and a bearer token) and finds it; deactivated by SCIM, session, key and token all stop on the next request."""
    settings.CAIRN_SCIM_TOKEN = SCIM_TOKEN
    sso.set_accounts({**ACCOUNTS, "dana": {"preferred_username": "dana"}})  # the IdP sends no groups claim
    scim = APIClient(REMOTE_ADDR="192.0.2.60")
    scim.credentials(HTTP_AUTHORIZATION=f"Bearer {SCIM_TOKEN}")
    created = scim.post("/scim/v2/Users", {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                                           "userName": "dana", "active": True}, format="json")
    assert created.status_code == 201, created.content
    group = scim.post("/scim/v2/Groups", {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                                          "displayName": "plant", "members": [{"value": created.json()["id"]}]},
                      format="json")
    assert group.status_code == 201, group.content
    owner = User.objects.create(username="plant-owner")
    collection = collection_create(actor=SYSTEM, owner=owner, name="Plant manuals")
    collection_share(actor=SYSTEM, collection=collection, principal=Group.objects.get(name="plant"), role="viewer")

    browser = Client(REMOTE_ADDR="192.0.2.61")
    assert _browser_sign_in(browser, "dana").status_code == 302
    assert [c["id"] for c in browser.get("/api/v1/collections").json()["results"]] == [collection.pk]
    dana = User.objects.get(username="dana")
    assert dana.pk == int(created.json()["id"])  # the IdP sign-in found the SCIM user, did not make a second
    token = bearer(sso.sign_in("dana", API_CALLBACK)["access_token"])
    assert collection_ids(token) == [collection.pk]
    _, secret = api_key_create(user=dana, name="laptop", actor=SYSTEM)
    keyed = APIClient(REMOTE_ADDR="192.0.2.62")
    keyed.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert keyed.get(f"/api/v1/collections/{collection.pk}").status_code == 200

    patch = scim.patch(f"/scim/v2/Users/{dana.pk}", {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                                                     "Operations": [{"op": "replace", "path": "active",
                                                                     "value": False}]}, format="json")
    assert patch.status_code == 200 and patch.json()["active"] is False
    assert browser.get("/api/v1/collections").status_code in (401, 403)
    assert token.get("/api/v1/collections").status_code == 401
    assert keyed.get(f"/api/v1/collections/{collection.pk}").status_code == 401
    assert _browser_sign_in(Client(REMOTE_ADDR="192.0.2.63"), "dana").status_code == 403
