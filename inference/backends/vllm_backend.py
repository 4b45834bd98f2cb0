"""Generation with vLLM in this process: continuous batching and prefix caching on the GPU.

vLLM is an optional extra (``pip install 'cairn[vllm]'`` on a GPU host); it
is imported only when this backend is created, and its absence is a clear
``ModelLoadError``. One ``AsyncLLMEngine`` runs on an event loop in a
background thread; every ``stream`` call submits its request to it, and the
engine batches whatever is in flight at each step (continuous batching),
so concurrent Cairn requests share the GPU without any batching code here.
Prefix caching is on: every prompt starts with the same instructions
(``inference.prompting``), so their KV cache is computed once.

The request mapping (prompt text, sampling parameters, engine arguments,
cumulative-to-delta text) is plain Python, tested without vLLM.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import logging
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Unpack

from inference.backends import GenerationError, ModelLoadError
from inference.backends.options import (
    ChatOptions,
    Sampling,
    manifest_check,
    prompt_opens_think,
    prompt_style,
)
from inference.prompting import build_messages, build_plain_prompt, pack_passages
from inference.reasoning import ReasoningSplitter
from inference.types import GenerationRequest, StreamEvents

logger = logging.getLogger(__name__)

_DONE = object()


def require_vllm() -> None:
    if importlib.util.find_spec("vllm") is None:
        raise ModelLoadError(
            "The vllm backend needs vLLM, which is not installed. On a GPU host: "
            "pip install 'cairn[vllm]' (or pip install vllm), or use CAIRN_LLM_BACKEND=transformers."
        )


def engine_arguments(
    model_dir: str,
    *,
    tensor_parallel_size: int = 1,
    dtype: str | None = None,
    quantization: str | None = None,
    gpu_memory_utilization: float = 0.9,
    max_model_len: int | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``AsyncEngineArgs``: prefix caching on, local files only."""
    arguments: dict[str, Any] = {
        "model": model_dir,
        "tokenizer": model_dir,
        "tensor_parallel_size": tensor_parallel_size,
        "enable_prefix_caching": True,
        "gpu_memory_utilization": gpu_memory_utilization,
        "dtype": dtype or "auto",  # vLLM: bf16 where supported, the checkpoint's otherwise
        "trust_remote_code": False,
    }
    if quantization:
        # vLLM names: "bitsandbytes" covers the 4-bit in-flight path; AWQ/GPTQ
        # checkpoints declare themselves in config.json and need nothing here.
        arguments["quantization"] = "bitsandbytes" if quantization in ("4bit", "8bit") else quantization
    if max_model_len:
        arguments["max_model_len"] = max_model_len
    return arguments


def sampling_arguments(
    request: GenerationRequest, *, do_sample: bool, temperature: float, top_p: float
) -> dict[str, Any]:
    """Keyword arguments for ``SamplingParams``: greedy unless sampling was asked for."""
    return {
        "max_tokens": max(1, request.max_new_tokens),
        "temperature": temperature if do_sample else 0.0,
        "top_p": top_p if do_sample else 1.0,
        # <think>/</think> are added tokens, not special ones, in R1's tokenizer: kept.
        "skip_special_tokens": True,
    }


def text_deltas(cumulative: Iterator[str]) -> Iterator[str]:
    """The new text of each cumulative output (vLLM's default ``RequestOutputKind.CUMULATIVE``).

    Text already emitted is never taken back: should detokenisation revise
    earlier characters (rare, with byte-fallback tokens), only text beyond
    what was emitted is passed on.
    """
    emitted = 0
    for text in cumulative:
        if len(text) > emitted:
            yield text[emitted:]
            emitted = len(text)


class VLLMGenerator:
    """A local model served by vLLM's engine; see the module docstring.

    Options: ``tensor_parallel_size`` (GPUs per model), ``dtype``,
    ``quantization``, ``gpu_memory_utilization``, and the options every
    local model takes (``inference.backends.options.ChatOptions``;
    ``context_window`` is vLLM's ``max_model_len``).
    """

    name = "vllm"
    generated = True

    def __init__(
        self,
        model_path: str | Path,
        *,
        tensor_parallel_size: int = 1,
        dtype: str | None = None,
        quantization: str | None = None,
        gpu_memory_utilization: float = 0.9,
        device: str | None = None,  # accepted for option parity; vLLM places the model itself
        device_map: str | None = None,
        gguf_file: str | None = None,
        **options: Unpack[ChatOptions],
    ) -> None:
        require_vllm()
        self.model_dir = Path(model_path).expanduser()
        self.model_name = self.model_dir.name
        if not (self.model_dir / "config.json").is_file():
            raise ModelLoadError(f"The model directory {self.model_dir} has no config.json.")
        manifest_check(self.model_dir, options)
        from vllm import AsyncEngineArgs, AsyncLLMEngine, SamplingParams

        self._sampling_params = SamplingParams
        self.sampling = Sampling.of(options)
        context_window = options.get("context_window")
        arguments = engine_arguments(
            str(self.model_dir), tensor_parallel_size=tensor_parallel_size,
            dtype=None if dtype == "auto" else dtype, quantization=quantization,
            gpu_memory_utilization=gpu_memory_utilization, max_model_len=context_window,
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="cairn-vllm-loop", daemon=True)
        self._thread.start()
        try:
            self.engine = AsyncLLMEngine.from_engine_args(AsyncEngineArgs(**arguments))
            self.tokenizer = asyncio.run_coroutine_threadsafe(self.engine.get_tokenizer(), self._loop).result()
            config = asyncio.run_coroutine_threadsafe(self.engine.get_model_config(), self._loop).result()
        except Exception as exc:
            raise ModelLoadError(f"vLLM could not load {self.model_dir}: {type(exc).__name__}: {exc}") from exc
        self.context_window = int(context_window or config.max_model_len)
        self.system_in_user, self.expect_reasoning = prompt_style(self.model_dir, options, self._template_opens_think)
        self._ids = itertools.count()

    def _template_opens_think(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None)) and prompt_opens_think(
            self.tokenizer.apply_chat_template([{"role": "user", "content": "?"}],
                                               add_generation_prompt=True, tokenize=False)
        )

    def prompt(self, request: GenerationRequest) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return str(self.tokenizer.apply_chat_template(
                build_messages(request, system_in_user=self.system_in_user),
                add_generation_prompt=True, tokenize=False,
            ))
        return build_plain_prompt(request)

    def prompt_tokens(self, request: GenerationRequest) -> int:
        return len(self.tokenizer.encode(self.prompt(request), add_special_tokens=False))

    def pack(self, request: GenerationRequest) -> GenerationRequest:
        return pack_passages(request, prompt_tokens=self.prompt_tokens, window=self.context_window)

    def stream(self, request: GenerationRequest) -> StreamEvents:
        request = self.pack(request)
        params = self._sampling_params(**sampling_arguments(
            request, do_sample=self.sampling.do_sample, temperature=self.sampling.temperature,
            top_p=self.sampling.top_p,
        ))
        request_id = f"{request.request_id or 'cairn'}-{next(self._ids)}"
        pieces: queue.Queue[Any] = queue.Queue()
        reasons: list[str | None] = []  # vLLM's finish_reason per output: "length" when cut at max_tokens

        async def run() -> None:
            try:
                async for output in self.engine.generate(self.prompt(request), params, request_id):
                    reasons.append(output.outputs[0].finish_reason)
                    pieces.put(output.outputs[0].text)
            except BaseException as exc:  # handed to the consumer thread
                pieces.put(exc)
            finally:
                pieces.put(_DONE)

        future = asyncio.run_coroutine_threadsafe(run(), self._loop)

        def cumulative() -> Iterator[str]:
            while (item := pieces.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise GenerationError(f"vLLM failed: {type(item).__name__}: {item}") from item
                yield item

        splitter = ReasoningSplitter(expect_reasoning=self.expect_reasoning)
        finished = False
        try:
            for delta in text_deltas(cumulative()):
                yield from splitter.feed(delta)
            finished = True
            yield from splitter.close()
        finally:
            if not finished:
                # The consumer went away: free the sequence's KV cache now.
                asyncio.run_coroutine_threadsafe(self.engine.abort(request_id), self._loop)
                future.cancel()
        return "length" if reasons and reasons[-1] == "length" else "stop"

