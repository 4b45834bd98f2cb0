"""Start the real OpenID provider (npm ``oidc-provider``, tests/oidc/provider.mjs) and get tokens from it.

``OidcProvider`` runs ``node provider.mjs`` on a free loopback port with an
RSA signing key made here (so a test can also sign tokens with that key, to
show what Cairn refuses), accounts a test can change between sign-ins, and
one confidential client for Cairn.  ``access_token`` walks the provider's
own sign-in pages over HTTP (authorization code + PKCE) and returns the JWT
access token it issues.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import requests
from joserfc.jwk import RSAKey

HERE = Path(__file__).resolve().parent
AUDIENCE = "https://cairn.example/api"
CLIENT_ID = "cairn"
CLIENT_SECRET = "a-client-secret-that-is-long-enough-for-hs256-0123456789"


def node_ready() -> str | None:
    """Why the provider cannot run here, or None."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not (HERE / "node_modules" / "oidc-provider").is_dir():
        return "tests/oidc/node_modules is missing: npm ci --prefix tests/oidc"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OidcProvider:
    def __init__(self, workdir: Path, redirect_uris: list[str], accounts: dict[str, dict[str, Any]]) -> None:
        self.workdir = workdir
        self.port = _free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.key = RSAKey.generate_key(2048, parameters={"kid": f"k-{secrets.token_hex(4)}", "use": "sig",
                                                         "alg": "RS256"})
        self.redirect_uris = redirect_uris
        self.set_accounts(accounts)
        self._write_config()
        self.process: subprocess.Popen[str] | None = None

    def _write_config(self) -> None:
        (self.workdir / "keys.json").write_text(json.dumps({"keys": [self.key.as_dict(private=True)]}))
        (self.workdir / "clients.json").write_text(json.dumps([{
            "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "redirect_uris": self.redirect_uris,
            "grant_types": ["authorization_code"], "response_types": ["code"],
        }]))

    def set_accounts(self, accounts: dict[str, dict[str, Any]]) -> None:
        (self.workdir / "accounts.json").write_text(json.dumps(accounts))

    def start(self) -> OidcProvider:
        env = {**os.environ, "OIDC_PORT": str(self.port), "OIDC_KEYS": str(self.workdir / "keys.json"),
               "OIDC_ACCOUNTS": str(self.workdir / "accounts.json"),
               "OIDC_CLIENTS": str(self.workdir / "clients.json"), "OIDC_AUDIENCE": AUDIENCE}
        self.process = subprocess.Popen(["node", str(HERE / "provider.mjs")], cwd=HERE, env=env, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.issuer}/.well-known/openid-configuration", timeout=1).ok:
                    return self
            except requests.RequestException:
                pass
            if self.process.poll() is not None:
                raise RuntimeError(f"oidc-provider exited: {self.process.stdout.read() if self.process.stdout else ''}")
            time.sleep(0.2)
        raise RuntimeError("oidc-provider did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def rotate_key(self) -> None:
        """A new signing key (the provider restarts on the same port, as after a real rotation)."""
        self.stop()
        self.key = RSAKey.generate_key(2048, parameters={"kid": f"k-{secrets.token_hex(4)}", "use": "sig",
                                                         "alg": "RS256"})
        self._write_config()
        self.start()

    # --- tokens, the way a real client gets them -----------------------------------------------

    def sign_in(self, login: str, redirect_uri: str, *, session: requests.Session | None = None) -> dict[str, Any]:
        """Authorization code + PKCE through the provider's sign-in pages; the token endpoint's answer."""
        http = session or requests.Session()
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        response = http.get(f"{self.issuer}/auth", allow_redirects=False, timeout=10, params={
            "client_id": CLIENT_ID, "response_type": "code", "redirect_uri": redirect_uri,
            "scope": "openid profile", "state": secrets.token_urlsafe(8), "nonce": secrets.token_urlsafe(8),
            "code_challenge": challenge, "code_challenge_method": "S256", "resource": AUDIENCE,
        })
        code = self._walk(http, response, redirect_uri, login)
        token = http.post(f"{self.issuer}/token", auth=(CLIENT_ID, CLIENT_SECRET), timeout=10, data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
            "code_verifier": verifier, "resource": AUDIENCE,
        })
        token.raise_for_status()
        return dict(token.json())

    def _walk(self, http: requests.Session, response: requests.Response, redirect_uri: str, login: str) -> str:
        for _ in range(12):
            if response.status_code in (302, 303):
                location = urljoin(response.url, response.headers["Location"])
                if location.startswith(redirect_uri):
                    query = parse_qs(urlsplit(location).query)
                    if "code" not in query:
                        raise RuntimeError(f"provider refused: {query}")
                    return query["code"][0]
                response = http.get(location, allow_redirects=False, timeout=10)
            elif response.status_code == 200 and "/interaction/" in response.url:
                prompt = "login" if 'name="login"' in response.text else "consent"
                data = {"prompt": prompt, "login": login, "password": "any"} if prompt == "login" else {
                    "prompt": "consent"}
                response = http.post(response.url, data=data, allow_redirects=False, timeout=10)
            else:
                raise RuntimeError(f"unexpected answer {response.status_code} at {response.url}")
        raise RuntimeError("sign-in did not finish")
