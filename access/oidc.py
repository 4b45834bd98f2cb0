"""The configured OpenID provider: discovery, its signing keys (cached, rotated), and checking its JWTs.

Discovery reads ``<issuer>/.well-known/openid-configuration`` once an hour;
the key set (``jwks_uri``) is cached and fetched again when a token names a
key id Cairn has not seen (the provider rotated its keys) — at most once per
``REFRESH_MIN_SECONDS``, so garbage tokens cannot make Cairn hammer the
provider.  Tokens are checked with joserfc: the signature against the
provider's key, the algorithm pinned to the asymmetric ones the provider
announces (never ``none``, never an HMAC that a public key could forge),
``iss``, ``aud``, ``exp``, ``nbf`` and ``iat`` with ``LEEWAY_SECONDS``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from django.conf import settings
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

ASYMMETRIC = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"})
LEEWAY_SECONDS = 30
METADATA_TTL_SECONDS = 3600
REFRESH_MIN_SECONDS = 30
HTTP_TIMEOUT_SECONDS = 5
MAX_TOKEN_BYTES = 16_384


class TokenRejected(Exception):
    """A bearer token Cairn does not accept; the message says why (safe to return: no secret in it)."""


class ProviderUnavailable(Exception):
    """The identity provider could not be reached or answered nonsense."""


@dataclass
class _Cache:
    metadata: dict[str, Any] | None = None
    metadata_at: float = 0.0
    keys: KeySet | None = None
    keys_at: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


class Provider:
    """One OpenID provider, by its issuer URL; thread-safe, shared by a process's requests."""

    def __init__(self, issuer: str, audience: str) -> None:
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self._cache = _Cache()

    # --- discovery and keys ---------------------------------------------------------------

    def _get_json(self, url: str) -> dict[str, Any]:
        try:
            response = requests.get(url, timeout=HTTP_TIMEOUT_SECONDS, headers={"Accept": "application/json"})
            response.raise_for_status()
            body = response.json()
        except (requests.RequestException, ValueError) as error:
            raise ProviderUnavailable(f"the identity provider did not answer {url}: {type(error).__name__}") from None
        if not isinstance(body, dict):
            raise ProviderUnavailable(f"the identity provider's {url} is not a JSON object")
        return body

    def metadata(self) -> dict[str, Any]:
        cache = self._cache
        with cache.lock:
            if cache.metadata is None or time.monotonic() - cache.metadata_at > METADATA_TTL_SECONDS:
                body = self._get_json(f"{self.issuer}/.well-known/openid-configuration")
                if str(body.get("issuer", "")).rstrip("/") != self.issuer:
                    raise ProviderUnavailable("the provider's discovery document names another issuer")
                cache.metadata, cache.metadata_at = body, time.monotonic()
            return cache.metadata

    def algorithms(self) -> list[str]:
        """The asymmetric algorithms the provider signs with (RS256 when it does not say)."""
        announced = self.metadata().get("id_token_signing_alg_values_supported") or ["RS256"]
        algorithms = [alg for alg in announced if alg in ASYMMETRIC]
        return algorithms or ["RS256"]

    def _key_set(self, *, refresh: bool) -> KeySet:
        """The provider's signing keys: cached; fetched again when stale or, at most every
        ``REFRESH_MIN_SECONDS``, when a token names a key the cache lacks (``refresh``)."""
        cache = self._cache
        with cache.lock:
            age = time.monotonic() - cache.keys_at
            if cache.keys is not None and age <= METADATA_TTL_SECONDS and not (refresh and age >= REFRESH_MIN_SECONDS):
                return cache.keys
        jwks_uri = self.metadata().get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise ProviderUnavailable("the provider's discovery document has no jwks_uri")
        body = self._get_json(jwks_uri)
        try:
            keys = KeySet.import_key_set({"keys": [key for key in body.get("keys", [])
                                                   if isinstance(key, dict) and key.get("use", "sig") == "sig"]})
        except (JoseError, ValueError, TypeError) as error:
            raise ProviderUnavailable(f"the provider's key set could not be read: {error}") from None
        with cache.lock:
            cache.keys, cache.keys_at = keys, time.monotonic()
        return keys

    def _key_for(self, kid: str | None, alg: str) -> Any:
        for refresh in (False, True):
            key_set = self._key_set(refresh=refresh)
            candidates = [key for key in key_set.keys if (kid is None or key.kid == kid)]
            if kid is None and len(candidates) > 1:
                raise TokenRejected("the token names no key id (kid) and the provider has several keys")
            if candidates:
                return candidates[0]
        raise TokenRejected("the token is signed with a key the provider does not publish (unknown kid)")

    # --- tokens -----------------------------------------------------------------------------

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a JWT the provider signed for Cairn; ``TokenRejected`` otherwise."""
        if len(token) > MAX_TOKEN_BYTES or token.count(".") != 2:
            raise TokenRejected("not a JSON Web Token")
        try:
            header = jws.extract_compact(token.encode("ascii")).protected
        except (JoseError, ValueError, UnicodeError, json.JSONDecodeError, TypeError):
            raise TokenRejected("not a JSON Web Token") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms():
            raise TokenRejected(f"the token's algorithm {str(alg)[:20]!r} is not one the provider signs with")
        kid = header.get("kid")
        key = self._key_for(kid if isinstance(kid, str) else None, alg)
        try:
            decoded = jwt.decode(token, key, algorithms=[alg])
        except (JoseError, ValueError, TypeError):
            raise TokenRejected("the token's signature does not verify") from None
        claims = dict(decoded.claims)
        registry = jwt.JWTClaimsRegistry(
            leeway=LEEWAY_SECONDS,
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": self.audience},
            exp={"essential": True},
            sub={"essential": True},
        )
        try:
            registry.validate(claims)
        except JoseError as error:
            raise TokenRejected(_claim_problem(error)) from None
        iat = claims.get("iat")
        if iat is not None and (not isinstance(iat, int | float) or iat > time.time() + LEEWAY_SECONDS):
            raise TokenRejected("the token was issued in the future (iat)")
        return claims


def _claim_problem(error: JoseError) -> str:
    name = type(error).__name__
    described = {
        "ExpiredTokenError": "the token has expired (exp)",
        "InvalidTokenError": "the token is not valid yet (nbf or iat)",
        "MissingClaimError": f"the token lacks a required claim: {error.description}",
        "InvalidClaimError": f"the token's claim is wrong for this Cairn: {error.description}",
    }
    return described.get(name, f"the token's claims were refused: {error.description}")


_provider: Provider | None = None
_provider_lock = threading.Lock()


def provider() -> Provider | None:
    """The configured provider (``CAIRN_OIDC_ISSUER``), or None when single sign-on is off."""
    global _provider
    issuer = settings.CAIRN_OIDC_ISSUER
    if not issuer:
        return None
    with _provider_lock:
        if _provider is None or _provider.issuer != issuer.rstrip("/") or _provider.audience != settings.CAIRN_OIDC_AUDIENCE:
            _provider = Provider(issuer, str(settings.CAIRN_OIDC_AUDIENCE))
        return _provider


def claims_digest(claims: Mapping[str, Any], names: tuple[str, ...]) -> str:
    """A stable text of the claims that drive synchronisation (to skip a sync when nothing changed)."""
    return json.dumps({name: claims.get(name) for name in names}, sort_keys=True, default=str)


__all__ = ["Provider", "ProviderUnavailable", "TokenRejected", "claims_digest", "provider"]
