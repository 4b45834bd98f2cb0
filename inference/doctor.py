"""What ``manage.py cairn_doctor`` reports: the host, the libraries and whether the model fits.

The most common self-hosting failures are a model that does not fit the GPU
and a library version that cannot read the model; both can be seen before
a single weight is loaded. Parameters are counted by building the model on
PyTorch's ``meta`` device (shapes only, no memory, no weights read), so the
report for a 70B model takes a second on a laptop.

Estimates, stated as such: weights at 2 bytes per parameter (bf16/fp16), 1
(8-bit) or ~0.55 (4-bit NF4 with its scales); plus the bf16 KV cache of
one sequence of ``KV_TOKENS`` tokens (Cairn's prompts — a few passages and
the answer — stay well under it; a 128K window filled completely would need
far more) and a fixed allowance for activations and the CUDA context.

Besides the configured model, the report sizes three reference models from
their published configurations (``REFERENCE_MODELS``: DeepSeek-R1's 7B and
32B distills and DeepSeek-R1/V3 itself, 671B) and says, for each precision,
whether it fits this host's GPUs; and which dtype the transformers backend
would choose here (bf16 where the GPU computes it natively, compute
capability 8.0 on).
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

GIB = 1024**3
BYTES_PER_PARAM = {"bf16": 2.0, "8bit": 1.0, "4bit": 0.55, "fp32": 4.0}
_OVERHEAD_BYTES = 1.5 * GIB  # CUDA context, activations, allocator slack
KV_TOKENS = 8192
LIBRARIES = (
    "torch", "transformers", "accelerate", "tokenizers", "safetensors", "faiss-cpu", "faiss-gpu",
    "sentence-transformers", "bitsandbytes", "vllm", "gguf",
)


# Published config.json values (their sizes only), for the fit table every report carries.
REFERENCE_MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "DeepSeek-R1-Distill-Qwen-7B": ("qwen2", dict(
        hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
        num_key_value_heads=4, vocab_size=152064, max_position_embeddings=131072, tie_word_embeddings=False,
    )),
    "DeepSeek-R1-Distill-Qwen-32B": ("qwen2", dict(
        hidden_size=5120, intermediate_size=27648, num_hidden_layers=64, num_attention_heads=40,
        num_key_value_heads=8, vocab_size=152064, max_position_embeddings=131072, tie_word_embeddings=False,
    )),
    # DeepSeek-R1 and V3 share this architecture; transformers builds it without the multi-token-prediction
    # layer (14B of the published 685B), so it counts the 671B that serve a request.
    "DeepSeek-R1": ("deepseek_v3", dict(
        hidden_size=7168, intermediate_size=18432, moe_intermediate_size=2048, num_hidden_layers=61,
        first_k_dense_replace=3, num_attention_heads=128, num_key_value_heads=128, n_routed_experts=256,
        num_experts_per_tok=8, n_shared_experts=1, n_group=8, topk_group=4, kv_lora_rank=512,
        q_lora_rank=1536, qk_rope_head_dim=64, qk_nope_head_dim=128, v_head_dim=128, vocab_size=129280,
        max_position_embeddings=163840, tie_word_embeddings=False,
    )),
}
FIT_PRECISIONS = ("bf16", "8bit", "4bit")


@dataclass
class Gpu:
    index: int
    name: str
    total_bytes: int
    free_bytes: int
    bf16: bool  # computes bf16 natively (compute capability 8.0 on); emulated bf16 does not count
    capability: str = ""  # "9.0" for an H100


@dataclass
class Fit:
    """Whether one model at one precision fits this host's GPUs."""

    model: str
    parameters: int
    precision: str  # "bf16", "8bit", "4bit"
    needed_bytes: int
    verdict: str  # "fits on one GPU", "fits across N GPUs", "does not fit", "no GPU"


@dataclass
class ModelEstimate:
    path: str
    model_type: str = ""
    parameters: int = 0
    context_window: int = 0
    kv_cache_bytes: int = 0  # one sequence of min(window, KV_TOKENS) tokens, bf16
    needed_bytes: dict[str, int] = field(default_factory=dict)  # bf16 / 8bit / 4bit / fp32
    saved_with_transformers: str = ""
    manifest: str = ""  # "present", "absent"
    error: str = ""


@dataclass
class Report:
    python: str
    platform: str
    cuda_available: bool
    cuda_runtime: str | None
    driver: str | None
    gpus: list[Gpu]
    ram_total_bytes: int
    ram_available_bytes: int
    libraries: dict[str, str | None]
    backend: str
    model: ModelEstimate | None
    problems: list[str]
    recommendation: str
    dtype: str = ""  # what the transformers backend would compute in here
    dtype_reason: str = ""
    reference_fits: list[Fit] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def library_versions() -> dict[str, str | None]:
    """Installed versions from package metadata (nothing is imported)."""
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def memory() -> tuple[int, int]:
    """``(total, available)`` RAM in bytes, from /proc/meminfo or psutil."""
    try:
        info = {}
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                key, value = line.split(":", 1)
                info[key] = int(value.split()[0]) * 1024
        return info["MemTotal"], info.get("MemAvailable", info["MemFree"])
    except (OSError, KeyError, ValueError):
        try:
            import psutil

            vm = psutil.virtual_memory()
            return int(vm.total), int(vm.available)
        except ImportError:
            return 0, 0


def driver_version() -> str | None:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def gpus() -> tuple[bool, str | None, list[Gpu]]:
    import torch

    if not torch.cuda.is_available():
        return False, torch.version.cuda, []
    found = []
    for index in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(index)
        props = torch.cuda.get_device_properties(index)
        found.append(Gpu(index=index, name=props.name, total_bytes=int(total), free_bytes=int(free),
                         bf16=props.major >= 8, capability=f"{props.major}.{props.minor}"))
    return True, torch.version.cuda, found


def estimate_model(model_path: str, gguf_file: str | None = None) -> ModelEstimate:
    """Parameter count and memory needs of a model directory (or .gguf), without loading weights."""
    path = Path(model_path).expanduser()
    estimate = ModelEstimate(path=str(path))
    try:
        from transformers import AutoConfig

        from inference.backends import gguf_read
        from inference.backends.transformers_backend import locate_model
        from inference.manifest import manifest_path

        directory, gguf = locate_model(path, gguf_file)
        estimate.manifest = "present" if manifest_path(directory).is_file() else "absent"
        kwargs: dict[str, Any] = {"local_files_only": True}
        if gguf:
            kwargs["gguf_file"] = gguf
            gguf_read.install()  # the metadata parsed ~3× faster (inference.backends.gguf_read)
        config = AutoConfig.from_pretrained(directory, **kwargs)
        estimate.saved_with_transformers = str(getattr(config, "transformers_version", "") or "")
        _size(estimate, config)
    except Exception as exc:  # a report, not a crash: say what went wrong
        estimate.error = f"{type(exc).__name__}: {exc}"
    return estimate


def _size(estimate: ModelEstimate, config: Any) -> None:
    """Fill ``estimate`` from a transformers config: parameters counted on the meta device, KV cache, needs."""
    import torch
    from transformers import AutoModelForCausalLM

    estimate.model_type = str(config.model_type)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    estimate.parameters = int(sum(p.numel() for p in model.parameters()))
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    window = int(getattr(text, "max_position_embeddings", 0) or 0)
    estimate.context_window = window
    layers = int(getattr(text, "num_hidden_layers", 0) or 0)
    heads = int(getattr(text, "num_attention_heads", 1) or 1)
    kv_heads = int(getattr(text, "num_key_value_heads", heads) or heads)
    head_dim = int(getattr(text, "head_dim", 0) or (getattr(text, "hidden_size", 0) // heads))
    if getattr(text, "kv_lora_rank", None):  # DeepSeek-V2/V3 MLA caches a compressed latent
        per_token = layers * (int(text.kv_lora_rank) + int(getattr(text, "qk_rope_head_dim", 0))) * 2
    else:
        per_token = 2 * layers * kv_heads * head_dim * 2
    estimate.kv_cache_bytes = per_token * min(window or KV_TOKENS, KV_TOKENS)
    for precision, width in BYTES_PER_PARAM.items():
        estimate.needed_bytes[precision] = int(
            estimate.parameters * width + estimate.kv_cache_bytes + _OVERHEAD_BYTES
        )


def reference_estimates() -> list[ModelEstimate]:
    """``REFERENCE_MODELS`` sized like a configured model (on the meta device: a second, no memory)."""
    from transformers import AutoConfig

    estimates = []
    for name, (model_type, dims) in REFERENCE_MODELS.items():
        estimate = ModelEstimate(path=name)
        try:
            _size(estimate, AutoConfig.for_model(model_type, **dims))
        except Exception as exc:  # an older transformers without the architecture: say so, go on
            estimate.error = f"{type(exc).__name__}: {exc}"
        estimates.append(estimate)
    return estimates


def fit_verdict(needed: int, found: list[Gpu]) -> str:
    """Where ``needed`` bytes fit: one GPU's free memory, all of them together (split by layers), or nowhere."""
    if not found:
        return "no GPU"
    if needed <= max(g.free_bytes for g in found):
        return "fits on one GPU"
    if len(found) > 1 and needed <= sum(g.free_bytes for g in found):
        return f"fits across {len(found)} GPUs"
    return "does not fit"


def reference_fits(estimates: list[ModelEstimate], found: list[Gpu]) -> list[Fit]:
    return [
        Fit(model=e.path, parameters=e.parameters, precision=precision, needed_bytes=e.needed_bytes[precision],
            verdict=fit_verdict(e.needed_bytes[precision], found))
        for e in estimates if not e.error
        for precision in FIT_PRECISIONS
    ]


def dtype_decision(configured: str | None, device: str | None, found: list[Gpu]) -> tuple[str, str]:
    """``(dtype, why)``: what ``transformers_backend.choose_dtype`` picks on this host for these options."""
    if configured and configured != "auto":
        return configured, "set by CAIRN_LLM_DTYPE"
    if device and not device.startswith("cuda"):
        return "float32", f"CAIRN_LLM_DEVICE={device}: half precision is slow or missing on CPUs"
    if not found:
        return "float32", "no GPU: half precision is slow or missing on CPUs"
    index = int(device.split(":", 1)[1]) if device and ":" in device else 0
    gpu = next((g for g in found if g.index == index), found[0])
    if gpu.bf16:
        return "bfloat16", f"GPU {gpu.index} has compute capability {gpu.capability or '≥ 8.0'}: bf16 natively"
    return "float16", (f"GPU {gpu.index} has compute capability {gpu.capability or '< 8.0'}, below 8.0: "
                       "bf16 only emulated, fp16 instead")


def recommend(model: ModelEstimate | None, found: list[Gpu], ram_available: int) -> str:
    if model is None:
        return "No local model is configured (extractive or openai backend): nothing to fit."
    if model.error or not model.needed_bytes:
        return "Fix the model problem above first."
    need = model.needed_bytes
    if found:
        best = max(g.free_bytes for g in found)
        total = sum(g.free_bytes for g in found)
        if need["bf16"] <= best:
            return f"bf16 fits on one GPU ({_gib(need['bf16'])} of {_gib(best)} free): no quantization needed."
        if len(found) > 1 and need["bf16"] <= total:
            return (
                f"bf16 fits across {len(found)} GPUs ({_gib(need['bf16'])} of {_gib(total)} free): "
                f"set CAIRN_LLM_DEVICE_MAP=auto, or with vLLM CAIRN_VLLM_TENSOR_PARALLEL={len(found)}."
            )
        if need["8bit"] <= best:
            return f"Only 8-bit fits ({_gib(need['8bit'])} of {_gib(best)} free): set CAIRN_LLM_QUANTIZATION=8bit."
        if need["4bit"] <= best:
            return f"Only 4-bit fits ({_gib(need['4bit'])} of {_gib(best)} free): set CAIRN_LLM_QUANTIZATION=4bit."
        return (
            f"Does not fit even at 4-bit ({_gib(need['4bit'])}, {_gib(best)} free): use a smaller model, "
            "more GPUs, or the openai backend against a larger server."
        )
    if need["fp32"] <= ram_available:
        return (
            f"No GPU: runs on the CPU in float32 ({_gib(need['fp32'])} of {_gib(ram_available)} RAM "
            "available); expect a few tokens per second for a 7B model."
        )
    if need["bf16"] <= ram_available:
        return (
            f"No GPU, and float32 does not fit the free RAM; bfloat16 does ({_gib(need['bf16'])} of "
            f"{_gib(ram_available)}): set CAIRN_LLM_DTYPE=bfloat16 (slow on CPUs without AMX/AVX512-BF16)."
        )
    return (
        f"No GPU, and the model needs {_gib(need['bf16'])} even in bfloat16 with {_gib(ram_available)} RAM "
        "available: use a smaller model or the openai backend."
    )


def problems_for(backend: str, options: dict[str, Any], versions: dict[str, str | None],
                 cuda: bool, model: ModelEstimate | None) -> list[str]:
    from packaging.version import InvalidVersion, Version

    found: list[str] = []
    if backend == "vllm" and not versions.get("vllm"):
        found.append("CAIRN_LLM_BACKEND=vllm but vLLM is not installed (pip install 'cairn[vllm]').")
    if backend == "vllm" and not cuda:
        found.append("CAIRN_LLM_BACKEND=vllm needs a CUDA GPU, and none is visible.")
    if options.get("quantization"):
        if not cuda:
            found.append("CAIRN_LLM_QUANTIZATION is set but there is no CUDA GPU (bitsandbytes needs one).")
        if not versions.get("bitsandbytes"):
            found.append("CAIRN_LLM_QUANTIZATION is set but bitsandbytes is not installed.")
    if options.get("device_map") and not versions.get("accelerate"):
        found.append("CAIRN_LLM_DEVICE_MAP is set but accelerate is not installed.")
    if not versions.get("faiss-cpu") and not versions.get("faiss-gpu"):
        found.append("faiss is not installed: dense retrieval cannot work.")
    if model is not None:
        if model.error:
            found.append(f"The model cannot be read: {model.error}")
        elif model.saved_with_transformers and versions.get("transformers"):
            try:
                if Version(model.saved_with_transformers) > Version(str(versions["transformers"])):
                    found.append(
                        f"The model was saved with transformers {model.saved_with_transformers}, newer "
                        f"than the installed {versions['transformers']}: upgrade transformers if loading fails."
                    )
            except InvalidVersion:
                pass
        if model.path.endswith(".gguf") or options.get("gguf_file"):
            if not versions.get("gguf"):
                found.append("A GGUF model needs the gguf package (pip install gguf accelerate).")
    return found


def remote_problems(options: dict[str, Any]) -> list[str]:
    """For the openai backend: is the server reachable, and does it serve the configured model?"""
    import http.client
    from urllib.parse import urlsplit

    base, model = str(options.get("base_url") or ""), options.get("model")
    parts = urlsplit(base)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    headers = {"Authorization": f"Bearer {options['api_key']}"} if options.get("api_key") else {}
    try:
        connection = cls(parts.hostname or "", parts.port, timeout=10)
        connection.request("GET", f"{parts.path.rstrip('/')}/models", headers=headers)
        response = connection.getresponse()
        body = response.read()
        connection.close()
    except (OSError, http.client.HTTPException) as exc:
        return [f"The model server at {base} cannot be reached: {type(exc).__name__}: {exc}"]
    if response.status != 200:
        return [f"The model server at {base} answered {response.status} to GET /models (API key?)."]
    try:
        served = [card.get("id") for card in json.loads(body).get("data", [])]
    except (ValueError, AttributeError):
        return []
    if model not in served:
        return [f"The model server at {base} does not serve {model!r}; it serves: {', '.join(map(str, served))}."]
    return []


def diagnose(backend: str, model_path: str | None, options: dict[str, Any]) -> Report:
    versions = library_versions()
    cuda, runtime, found = gpus()
    total, available = memory()
    model = None
    if backend in ("transformers", "vllm") and model_path:
        model = estimate_model(model_path, options.get("gguf_file"))
    dtype, dtype_reason = dtype_decision(options.get("dtype"), options.get("device"), found)
    return Report(
        python=platform.python_version(),
        platform=platform.platform(),
        cuda_available=cuda,
        cuda_runtime=runtime,
        driver=driver_version() if cuda else None,
        gpus=found,
        ram_total_bytes=total,
        ram_available_bytes=available,
        libraries=versions,
        backend=backend,
        model=model,
        problems=problems_for(backend, options, versions, cuda, model)
        + (remote_problems(options) if backend == "openai" else []),
        recommendation=recommend(model, found, available),
        dtype=dtype,
        dtype_reason=dtype_reason,
        reference_fits=reference_fits(reference_estimates(), found),
    )


def _gib(value: int) -> str:
    return f"{value / GIB:.1f} GiB"


def format_report(report: Report) -> str:
    lines = [
        f"Python {report.python} on {report.platform}",
        f"RAM: {_gib(report.ram_available_bytes)} available of {_gib(report.ram_total_bytes)}",
    ]
    if report.cuda_available:
        lines.append(f"CUDA: yes (runtime {report.cuda_runtime}, driver {report.driver or 'unknown'})")
        for gpu in report.gpus:
            lines.append(
                f"  GPU {gpu.index}: {gpu.name}, {_gib(gpu.free_bytes)} free of {_gib(gpu.total_bytes)}, "
                f"compute capability {gpu.capability or '?'}"
                f"{', bf16' if gpu.bf16 else ', no native bf16 (fp16 will be used)'}"
            )
    else:
        lines.append("CUDA: no GPU visible (torch built for CUDA: "
                     f"{'yes, ' + str(report.cuda_runtime) if report.cuda_runtime else 'no, CPU build'})")
    lines.append("Libraries: " + ", ".join(
        f"{name} {version}" for name, version in report.libraries.items() if version
    ))
    missing = [name for name, version in report.libraries.items() if not version]
    if missing:
        lines.append("Not installed: " + ", ".join(missing))
    lines.append(f"Backend: {report.backend}")
    if report.dtype:
        lines.append(f"dtype: {report.dtype} ({report.dtype_reason})")
    model = report.model
    if model is not None:
        lines.append(f"Model: {model.path}")
        if not model.error:
            lines.append(
                f"  {model.model_type}, {model.parameters / 1e9:.2f}B parameters "
                f"({model.parameters:,}), context window {model.context_window:,} tokens, "
                f"manifest {model.manifest}"
            )
            tokens = min(model.context_window or KV_TOKENS, KV_TOKENS)
            lines.append(f"  KV cache for one {tokens:,}-token sequence (bf16): {_gib(model.kv_cache_bytes)}")
            lines.append("  memory needed: " + ", ".join(
                f"{precision} {_gib(value)}" for precision, value in model.needed_bytes.items()
            ))
    if report.gpus and report.reference_fits:
        lines.append("Reference models on these GPUs (weights + one 8K-token KV cache + 1.5 GiB):")
        by_model: dict[str, list[Fit]] = {}
        for fit in report.reference_fits:
            by_model.setdefault(fit.model, []).append(fit)
        for name, fits in by_model.items():
            lines.append(f"  {name} ({fits[0].parameters / 1e9:.1f}B): " + "; ".join(
                f"{f.precision} {_gib(f.needed_bytes)} {f.verdict}" for f in fits
            ))
    for problem in report.problems:
        lines.append(f"PROBLEM: {problem}")
    lines.append(f"Recommendation: {report.recommendation}")
    return "\n".join(lines)


def report_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2)

