"""Fixtures shared by the whole suite."""

from __future__ import annotations

import pytest


@pytest.fixture
def isolated_storage(settings, tmp_path):
    """A fresh blob store and index directory for one test."""
    settings.CAIRN_STORAGE_DIR = tmp_path / "blobs"
    settings.CAIRN_INDEX_DIR = tmp_path / "index"
    return tmp_path
