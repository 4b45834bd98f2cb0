"""The vllm backend without vLLM: the clear error, and the request mapping it would send."""

from __future__ import annotations

import importlib.util

import pytest

from inference.api import ModelLoadError, load_generator
from inference.backends.vllm_backend import engine_arguments, sampling_arguments, text_deltas
from inference.types import GenerationRequest

pytestmark = pytest.mark.usefixtures("fresh_generators")


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_without_vllm_loading_says_how_to_install_it(tiny_qwen2: str) -> None:
    with pytest.raises(ModelLoadError, match=r"pip install 'cairn\[vllm\]'"):
        load_generator("vllm", tiny_qwen2)


def test_vllm_needs_a_model_path() -> None:
    with pytest.raises(ModelLoadError, match="CAIRN_LLM_PATH"):
        load_generator("vllm", None)


def test_engine_arguments_turn_on_prefix_caching_and_tensor_parallelism() -> None:
    arguments = engine_arguments("/models/r1", tensor_parallel_size=4, max_model_len=16384)
    assert arguments["enable_prefix_caching"] is True
    assert arguments["tensor_parallel_size"] == 4
    assert arguments["max_model_len"] == 16384
    assert arguments["model"] == arguments["tokenizer"] == "/models/r1"
    assert arguments["dtype"] == "auto" and arguments["trust_remote_code"] is False
    assert "quantization" not in arguments
    assert engine_arguments("/m", quantization="4bit")["quantization"] == "bitsandbytes"
    assert engine_arguments("/m", dtype="float16")["dtype"] == "float16"


def test_sampling_is_greedy_unless_asked() -> None:
    request = GenerationRequest(question="q", passages=(), max_new_tokens=77)
    greedy = sampling_arguments(request, do_sample=False, temperature=0.6, top_p=0.95)
    assert greedy == {"max_tokens": 77, "temperature": 0.0, "top_p": 1.0, "skip_special_tokens": True}
    sampled = sampling_arguments(request, do_sample=True, temperature=0.6, top_p=0.95)
    assert sampled["temperature"] == 0.6 and sampled["top_p"] == 0.95


def test_cumulative_outputs_become_deltas() -> None:
    outputs = iter(["", "Quill", "Quilltown", "Quilltown", "Quilltown [1]."])
    assert list(text_deltas(outputs)) == ["Quill", "town", " [1]."]
    # A revised earlier character is not emitted twice.
    assert "".join(text_deltas(iter(["ab", "aX", "aXcd"]))) == "abcd"
