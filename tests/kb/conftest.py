from __future__ import annotations

import pytest
from rest_framework.test import APIClient


@pytest.fixture
def api(isolated_storage) -> APIClient:
    """A client of the REST API as the personal-mode owner (loopback, no login)."""
    return APIClient()


@pytest.fixture
def collection_id(api) -> int:
    response = api.post("/api/v1/collections", {"name": "Handbook"}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def upload(api: APIClient, collection_id: object, name: str, data: bytes):
    """POST a multipart upload with the file name exactly as given.

    (Django's test client would reduce the name to its basename first,
    hiding what a hostile client can send.)
    """
    boundary = "cairnboundary7f3a"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode("utf-8", "surrogateescape") + data + f"\r\n--{boundary}--\r\n".encode()
    return api.generic(
        "POST", f"/api/v1/collections/{collection_id}/documents", body,
        content_type=f"multipart/form-data; boundary={boundary}",
    )
