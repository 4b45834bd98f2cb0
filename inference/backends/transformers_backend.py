"""Generation with a local Hugging Face model directory (transformers + torch).

One ``TransformersGenerator`` holds one loaded model for the life of the
process (``inference.api.load_generator`` caches it). Generation on it is
serialised by a lock: requests queue rather than interleave, because a second
concurrent ``generate`` on the same weights would only split the device
between them and double the activation memory (batching is a later issue).

Invariants:
* nothing is fetched from a hub: every load is ``local_files_only``;
* every stream yields reasoning before answer (``ReasoningSplitter``) and,
  when closed early, stops the generation thread before releasing the lock.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Unpack, cast

import torch
import transformers
from jinja2 import TemplateError
from packaging.version import Version
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
    TextIteratorStreamer,
)

from inference.backends import ModelLoadError, gguf_read
from inference.backends.options import (
    ChatOptions,
    Sampling,
    manifest_check,
    prompt_opens_think,
    prompt_style,
)
from inference.prompting import (
    build_messages,
    build_plain_prompt,
    pack_passages,
    passages_for_model,
    prompt_for_model,
)
from inference.reasoning import ReasoningSplitter
from inference.types import FinishReason, GenerationRequest, StreamEvents

logger = logging.getLogger(__name__)

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json")
_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
QUANTIZATIONS: tuple[str, ...] = ("8bit", "4bit")
# tokenizer.model_max_length is this huge sentinel when a tokenizer does not know its window.
_NO_LIMIT = 10**9

# transformers >= 5 can encode control tokens that occur in message text
# (a document containing "<|im_end|>") as plain text instead of as the real
# control token; without it a document could close the user turn and write
# its own instructions. Older versions silently pass unknown kwargs to the
# template, so the support is detected rather than assumed.
_CAN_SANITIZE = "sanitize_control_tokens" in inspect.signature(
    PreTrainedTokenizerBase.apply_chat_template
).parameters
# transformers 4.56 renamed from_pretrained's ``torch_dtype`` to ``dtype``;
# the older name is deprecated in 5.x and the newer one is ignored before 4.56.
_DTYPE_KWARG = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"


def locate_model(model_path: str | Path, gguf_file: str | None = None) -> tuple[Path, str | None]:
    """``(directory, gguf file name or None)`` for a model given as a directory or a ``.gguf`` file.

    A GGUF file carries config, tokenizer and weights in one file; it may be
    named directly, through ``gguf_file`` (relative to the directory), or be
    the only ``*.gguf`` in a directory that has no Hugging Face weights.
    """
    path = Path(model_path).expanduser()
    if gguf_file:
        if Path(gguf_file).name != gguf_file:
            raise ModelLoadError(f"gguf_file must be a file name inside the model directory, got {gguf_file!r}.")
        return path, gguf_file
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"The GGUF model file {path} does not exist.")
        return path.parent, path.name
    if path.is_dir() and not (path / "config.json").is_file():
        candidates = sorted(path.glob("*.gguf"))
        if len(candidates) == 1:
            return path, candidates[0].name
        if len(candidates) > 1:
            raise ModelLoadError(
                f"The model directory {path} holds several GGUF files "
                f"({', '.join(c.name for c in candidates)}); name one (CAIRN_LLM_GGUF_FILE or the file path)."
            )
    return path, None


def _check_model_dir(model_dir: Path, gguf_file: str | None = None) -> None:
    """Fail early, naming what is missing, rather than with a transformers traceback."""
    if gguf_file is not None:
        if not (model_dir / gguf_file).is_file():
            raise ModelLoadError(f"The GGUF model file {model_dir / gguf_file} does not exist.")
        if importlib.util.find_spec("gguf") is None:
            raise ModelLoadError(
                "Loading a GGUF model needs the gguf package: pip install gguf accelerate"
            )
        return
    if not model_dir.exists():
        raise ModelLoadError(f"The model directory {model_dir} does not exist.")
    if not model_dir.is_dir():
        raise ModelLoadError(f"The model path {model_dir} is not a directory.")
    if not (model_dir / "config.json").is_file():
        raise ModelLoadError(
            f"The model directory {model_dir} has no config.json; it should be a Hugging Face "
            "model directory (as written by save_pretrained or downloaded from the Hub)."
        )
    if not any((model_dir / name).is_file() for name in _TOKENIZER_FILES):
        raise ModelLoadError(
            f"The model directory {model_dir} has no tokenizer files "
            f"(one of {', '.join(_TOKENIZER_FILES)})."
        )
    if not any(any(model_dir.glob(pattern)) for pattern in _WEIGHT_PATTERNS):
        raise ModelLoadError(
            f"The model directory {model_dir} has no weights (*.safetensors or pytorch_model*.bin)."
        )


def choose_device(device: str | None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


def bf16_native() -> bool:
    """Whether the current CUDA device computes in bf16 natively (compute capability 8.0, Ampere, on).

    ``torch.cuda.is_bf16_supported()`` also says yes where bf16 is only
    emulated (a T4, a V100), which is far slower than fp16 there.
    """
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch before 2.3 knew no emulation
        return bool(torch.cuda.is_bf16_supported())


def choose_dtype(device: torch.device, dtype: str | None) -> torch.dtype:
    if dtype:
        if dtype not in _DTYPES:
            raise ModelLoadError(f"Unknown dtype {dtype!r}; use one of {', '.join(_DTYPES)}.")
        return _DTYPES[dtype]
    if device.type == "cuda":
        # bf16 keeps fp32's range (no overflow in long generations); older GPUs lack it.
        return torch.bfloat16 if bf16_native() else torch.float16
    # Half precision on CPU is slow or unsupported for many kernels.
    return torch.float32


def quantization_config(quantization: str | None, device: torch.device, dtype: torch.dtype) -> Any:
    """The ``BitsAndBytesConfig`` for ``quantization`` ("8bit", "4bit") or None; refuses what cannot work."""
    if not quantization:
        return None
    if quantization not in QUANTIZATIONS:
        raise ModelLoadError(
            f"Unknown quantization {quantization!r}; use one of {', '.join(QUANTIZATIONS)} (or none)."
        )
    if device.type != "cuda":
        raise ModelLoadError(
            f"{quantization} quantization (bitsandbytes) needs a CUDA GPU, and the model is on "
            f"{device}; unset CAIRN_LLM_QUANTIZATION to run unquantized on this host."
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelLoadError(
            f"{quantization} quantization needs the bitsandbytes package: pip install bitsandbytes"
        )
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    # NF4 with double quantization is what QLoRA measured as the best 4-bit format.
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
    )


class _Cancelled(StoppingCriteria):
    """Stops ``generate`` once the consumer has gone away (stream closed early)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: object, **kwargs: object) -> torch.BoolTensor:
        # A bool tensor; torch's ops are typed as returning plain ``Tensor``, never the legacy ``BoolTensor``.
        return cast(torch.BoolTensor, torch.full(
            (input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device
        ))


class TransformersGenerator:
    """A local causal LM; see the module docstring.

    Options: ``device`` ("cuda:0", "cpu"; default: cuda:0 when available),
    ``dtype`` ("bfloat16", "float16", "float32"; default by device),
    ``quantization`` ("8bit", "4bit" via bitsandbytes, CUDA only),
    ``device_map`` ("auto" spreads a model over all GPUs; needs accelerate),
    ``gguf_file`` (a GGUF file in the model directory; a ``.gguf`` path works too),
    and the options every local model takes (``inference.backends.options.ChatOptions``).

    ``_check_files`` and ``_load`` are the seams a subclass overrides to serve
    a model built in memory rather than read from the directory (the GPU
    benchmark's random-weight 7B, ``benchmarks/gpu/generation.py``).
    """

    name = "transformers"
    generated = True

    def __init__(
        self,
        model_path: str | Path,
        *,
        device: str | None = None,
        dtype: str | None = None,
        quantization: str | None = None,
        device_map: str | None = None,
        gguf_file: str | None = None,
        **options: Unpack[ChatOptions],
    ) -> None:
        self.model_dir, self.gguf_file = locate_model(model_path, gguf_file)
        self.model_name = self.gguf_file or self.model_dir.name
        self._check_files()
        self.manifest_verified = manifest_check(self.model_dir, options)
        self.device = choose_device(device)
        self.dtype = choose_dtype(self.device, None if dtype == "auto" else dtype)
        self.quantization = quantization or None
        self.device_map = device_map or None
        if self.device_map and importlib.util.find_spec("accelerate") is None:
            raise ModelLoadError("device_map needs the accelerate package: pip install accelerate")
        self._quantization_config = quantization_config(self.quantization, self.device, self.dtype)
        self.tokenizer, self.model = self._load()
        # The last prompt encoded and its ids: packing counts a prompt's tokens by encoding it, and the
        # prompt that fits is then encoded again for generation; this makes that second time free.
        self._last_prompt: tuple[GenerationRequest, dict[str, torch.Tensor]] | None = None
        if self.device_map or self.quantization:
            # Placed by accelerate; inputs go where the embeddings are.
            self.device = self.model.get_input_embeddings().weight.device
        self.context_window = options.get("context_window") or self._model_window()
        self.max_passages = passages_for_model(
            parameters=self._parameters(), window=self.context_window, configured=options.get("max_passages")
        )
        self.answer_prompt = prompt_for_model(parameters=self._parameters(), configured=options.get("prompt"))
        self.has_chat_template = bool(getattr(self.tokenizer, "chat_template", None))
        self.system_in_user, self.expect_reasoning = prompt_style(self.model_dir, options, self._template_opens_think)
        self.sampling = Sampling.of(options)
        self._lock = threading.Lock()
        logger.info(
            "Loaded %s on %s as %s (chat template: %s, system in user turn: %s, expects reasoning: %s)",
            self.model_dir, self.device, self.dtype, self.has_chat_template, self.system_in_user,
            self.expect_reasoning,
        )

    def _check_files(self) -> None:
        _check_model_dir(self.model_dir, self.gguf_file)

    def _load(self) -> tuple[Any, Any]:
        if self.gguf_file:  # the tokenizer, the configuration and the weights each read the file: parse it once
            with gguf_read.reads_once():
                return self._load_files()
        return self._load_files()

    def _load_files(self) -> tuple[Any, Any]:
        try:
            common: dict[str, Any] = {"local_files_only": True}
            if self.gguf_file:
                common["gguf_file"] = self.gguf_file
            tokenizer = AutoTokenizer.from_pretrained(self.model_dir, **common)
            options: dict[str, Any] = {_DTYPE_KWARG: self.dtype, **common}
            if self._quantization_config is not None:
                options["quantization_config"] = self._quantization_config
            if self.device_map:
                options["device_map"] = self.device_map
            elif importlib.util.find_spec("accelerate") is not None:
                options["device_map"] = {"": str(self.device)}
            # Without accelerate, device_map is refused; load on the CPU and move.
            model = AutoModelForCausalLM.from_pretrained(self.model_dir, **options)
            if not (self.device_map or self._quantization_config is not None):
                model.to(self.device)  # type: ignore[arg-type]  # transformers' @wraps(Module.to) hides the bound self from mypy
        except Exception as exc:
            # Loading fails in many library-specific ways (OSError, ValueError,
            # safetensors' SafetensorError, CUDA out of memory); operators need
            # one readable error, and the original stays chained for the log.
            raise ModelLoadError(
                f"Could not load the model in {self.model_dir}: {type(exc).__name__}: {exc}"
            ) from exc
        model.eval()
        return tokenizer, model

    def _model_window(self) -> int:
        """The context window in tokens: the model's positions, or the tokenizer's limit if smaller."""
        config = self.model.config
        window = getattr(config, "max_position_embeddings", None) or _NO_LIMIT
        tokenizer_limit = getattr(self.tokenizer, "model_max_length", None) or _NO_LIMIT
        window = min(window, tokenizer_limit)
        if window >= _NO_LIMIT:
            raise ModelLoadError(
                f"The model in {self.model_dir} states no context window; set CAIRN_LLM_CONTEXT_WINDOW."
            )
        return int(window)

    def _parameters(self) -> int | None:
        try:
            return int(self.model.num_parameters())
        except Exception:  # a model class without the helper: size unknown, no automatic cap
            return None

    def prompt_tokens(self, request: GenerationRequest) -> int:
        """Tokens of the full prompt for ``request``, counted by this model's tokenizer."""
        return int(self.encode(request, pack=False)["input_ids"].shape[-1])

    def pack(self, request: GenerationRequest) -> GenerationRequest:
        """``request`` with the passages that fit the window (``prompting.pack_passages``), in its prompt style.

        A request without a style gets this model's (``answer_prompt``): packing is where a
        request becomes what the model sees, and the answer's assembly reads the style there.
        """
        if not request.prompt:
            request = replace(request, prompt=self.answer_prompt)
        return pack_passages(
            request, prompt_tokens=self.prompt_tokens, window=self.context_window, max_passages=self.max_passages
        )

    def _template_opens_think(self) -> bool:
        if not self.has_chat_template:
            return False
        try:
            prompt = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": "?"}], add_generation_prompt=True, tokenize=False
            )
        except TemplateError:
            return False
        return prompt_opens_think(str(prompt))

    def encode(self, request: GenerationRequest, pack: bool = True) -> dict[str, torch.Tensor]:
        """Token ids (and attention mask) of the prompt for ``request``, on the model's device.

        With ``pack`` (the default) the passages that do not fit the context
        window are left out first, whole.
        """
        if pack:
            request = self.pack(request)
        elif not request.prompt:
            request = replace(request, prompt=self.answer_prompt)  # counted as the model will be asked
        last = self._last_prompt  # one read: other threads may replace it meanwhile
        if last is not None and (last[0] is request or last[0] == request):
            return dict(last[1])
        if self.has_chat_template:
            options: dict[str, Any] = {"sanitize_control_tokens": True} if _CAN_SANITIZE else {}
            try:
                encoded = self._apply_template(request, self.system_in_user, options)
            except TemplateError:
                if self.system_in_user:
                    raise
                # Some templates (Gemma's, Mistral's older ones) refuse a system
                # role; the instructions then lead the user turn instead.
                logger.info(
                    "Chat template of %s refused a system message; folding it into the user turn",
                    self.model_dir,
                )
                self.system_in_user = True
                encoded = self._apply_template(request, True, options)
        else:
            # split_special_tokens: document text must never become a control token.
            encoded = self.tokenizer(
                build_plain_prompt(request), return_tensors="pt", split_special_tokens=True
            )
        ids = {key: value.to(self.device) for key, value in encoded.items()}
        self._last_prompt = (request, ids)
        return dict(ids)

    def _apply_template(
        self, request: GenerationRequest, system_in_user: bool, options: dict[str, Any]
    ) -> Any:
        return self.tokenizer.apply_chat_template(
            build_messages(request, system_in_user=system_in_user),
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
            **options,
        )

    def _generate_options(self, request: GenerationRequest) -> dict[str, Any]:
        options: dict[str, Any] = {
            "max_new_tokens": max(1, request.max_new_tokens),
            "do_sample": self.sampling.do_sample,
        }
        if self.sampling.do_sample:
            options.update(temperature=self.sampling.temperature, top_p=self.sampling.top_p)
        if self.model.generation_config.pad_token_id is None:
            pad = self.tokenizer.pad_token_id
            options["pad_token_id"] = pad if pad is not None else self.tokenizer.eos_token_id
        return options

    def stream(self, request: GenerationRequest) -> StreamEvents:
        """Generate, yielding reasoning and answer pieces as the model writes them.

        The model lock is held from the first ``next()`` until the stream is
        exhausted or closed; a consumer that abandons the iterator without
        closing it holds the lock until the iterator is garbage-collected.
        """
        with self._lock:
            inputs = self.encode(request)
            streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
            cancelled = threading.Event()
            failures: list[BaseException] = []
            outputs: list[Any] = []

            def run() -> None:
                try:
                    outputs.append(self.model.generate(
                        **inputs,
                        streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([_Cancelled(cancelled)]),
                        **self._generate_options(request),
                    ))
                except BaseException as exc:  # re-raised in the consumer's thread below
                    failures.append(exc)
                    streamer.end()  # unblock the consumer, which would otherwise wait forever

            worker = threading.Thread(
                target=run, name=f"cairn-generate-{request.request_id}", daemon=True
            )
            worker.start()
            splitter = ReasoningSplitter(expect_reasoning=self.expect_reasoning)
            try:
                for piece in streamer:
                    yield from splitter.feed(piece)
                if failures:
                    raise failures[0]
                yield from splitter.close()
            finally:
                cancelled.set()
                worker.join()
            return self._finish_reason(request, inputs, outputs[0] if outputs else None)

    def _finish_reason(self, request: GenerationRequest, inputs: dict[str, torch.Tensor],
                       sequences: Any) -> FinishReason:
        """ "length" when the model wrote ``max_new_tokens`` tokens and the last was not an end of text."""
        if sequences is None:
            return "stop"
        written = int(sequences.shape[-1]) - int(inputs["input_ids"].shape[-1])
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list | tuple) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            eos_ids.add(self.tokenizer.eos_token_id)
        return "length" if written >= max(1, request.max_new_tokens) and int(sequences[0, -1]) not in eos_ids else "stop"
