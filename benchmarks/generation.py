"""Generation throughput and time to first token: Cairn's pool vs the bare backend, same run.

    python benchmarks/generation.py                                   # CPU: a small random Qwen2
    python benchmarks/generation.py --shape deepseek-r1-distill-qwen-7b --new-tokens 128   # GPU
    python benchmarks/generation.py --model /models/DeepSeek-R1-Distill-Qwen-7B --json gen.json

For each concurrency (default 1, 4, 16) the same requests (a question with
four passages, greedy, ``--new-tokens`` each) are generated twice:

* **pool** — submitted at once to Cairn's ``GenerationPool`` (the path every
  ask takes: dynamic batching, streaming, metrics); TTFT is from submission
  to the first streamed piece, as a client sees it;
* **bare** — the same prompts left-padded into one ``model.generate`` call
  (static batching, nothing else: the best a caller of the bare backend
  could do); TTFT is the time until the first decoding step finished.

``--shape`` builds a model with random weights and the real architecture
and size (``deepseek-r1-distill-qwen-7b``: Qwen2, 7.6B parameters; needs a
GPU), or a small one for CPUs (``small``, the default, ~20M parameters;
``tiny``). Random weights would stop at a random end-of-sequence token; the
built models' output layer can never pick it, so every request generates
exactly ``--new-tokens`` tokens on both paths and throughputs compare equal
work. A ``--model`` directory is a real model: its requests stop where the
model stops, counted on both paths.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks._setup import print_table, write_json  # noqa: E402

SHAPES: dict[str, dict[str, Any]] = {
    # DeepSeek-R1-Distill-Qwen-7B's config.json (Qwen2 architecture).
    "deepseek-r1-distill-qwen-7b": dict(
        hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
        num_key_value_heads=4, vocab_size=152064, max_position_embeddings=131072,
        rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=False,
    ),
    "small": dict(
        hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8,
        num_key_value_heads=2, vocab_size=0, max_position_embeddings=4096, tie_word_embeddings=False,
    ),
    "tiny": dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=0, max_position_embeddings=2048, tie_word_embeddings=False,
    ),
}


def build_shape(shape: str, directory: Path, device: torch.device) -> str:
    """A random-weight model of ``shape`` with the tiny test tokenizer, saved to ``directory``."""
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from tests.inference.tiny_models import build_tiny_qwen2

    build_tiny_qwen2(directory)  # tokenizer + chat template (its tiny weights are replaced)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    dims = dict(SHAPES[shape])
    dims["vocab_size"] = dims["vocab_size"] or len(tokenizer)
    eos, pad = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.pad_token_id
    config = Qwen2Config(**dims, eos_token_id=eos, pad_token_id=pad, initializer_range=0.5
                         if shape != "deepseek-r1-distill-qwen-7b" else 0.02)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(0)
        default = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            model = Qwen2ForCausalLM(config)
        finally:
            torch.set_default_dtype(default)
    with torch.no_grad():
        # Never pick end-of-sequence, padding or ids the tokenizer cannot decode:
        # every request then runs to exactly --new-tokens on both paths.
        head = model.lm_head.weight
        head[len(tokenizer):] = 0
        head[[eos, pad]] = 0
        head[: len(tokenizer)] += 0.05 * head[: len(tokenizer)].sign()  # keep real logits off zero
    model.generation_config = GenerationConfig(eos_token_id=[eos, pad], pad_token_id=pad)
    model.save_pretrained(directory)
    return str(directory)


def requests(count: int, new_tokens: int) -> list[Any]:
    """``count`` handbook questions over four passages (the GPU benchmark's, ``benchmarks/gpu``)."""
    from benchmarks.gpu.generation import requests as handbook_requests

    return handbook_requests(count, new_tokens)


def run_bare(generator: Any, batch: list[Any]) -> dict[str, float]:
    """One left-padded ``model.generate`` over the whole batch (the GPU benchmark's, ``benchmarks/gpu``)."""
    from benchmarks.gpu.generation import run_bare as bare

    result = bare(generator, batch)
    return {"tokens": result["tokens"], "seconds": result["seconds"], "ttft": result["ttfts"][0]}


def run_pool(pool: Any, batch: list[Any]) -> dict[str, float]:
    """Submit the batch at once to Cairn's pool and read every request's events, as the web process does."""
    from benchmarks.gpu.generation import run_pool as pooled

    result = pooled(pool, batch)
    return {"tokens": result["tokens"], "seconds": result["seconds"], "ttft": statistics.median(result["ttfts"])}


def measure(label: str, run: Any, batch: list[Any], repeats: int) -> dict[str, float]:
    """Median over ``repeats`` runs (by throughput), after nothing: the caller warmed up."""
    runs = sorted((run(batch) for _ in range(repeats)), key=lambda r: r["tokens"] / r["seconds"])
    result = runs[len(runs) // 2]
    return {"tokens": result["tokens"], "seconds": result["seconds"], "ttft": result["ttft"],
            "tokens_per_s": result["tokens"] / result["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", help="a local model directory (or .gguf)")
    source.add_argument("--shape", choices=sorted(SHAPES), help="build a random-weight model of this shape")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--new-tokens", type=int, default=None, help="default: 32 on CPU, 128 on GPU")
    parser.add_argument("--repeats", type=int, default=None, help="default: 1 on CPU, 3 on GPU")
    parser.add_argument("--dtype", default=None, help="bfloat16/float16/float32 (default: by device)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", help="write the results as JSON to this path")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    on_gpu = device.type == "cuda"
    new_tokens = args.new_tokens or (128 if on_gpu else 32)
    repeats = args.repeats or (3 if on_gpu else 1)
    levels = [int(c) for c in args.concurrency.split(",")]

    from inference.api import load_generator

    started = time.perf_counter()
    if args.model:
        model_path, shape = args.model, None
    else:
        shape = args.shape or ("deepseek-r1-distill-qwen-7b" if on_gpu else "small")
        model_path = build_shape(shape, Path(tempfile.mkdtemp(prefix="cairn-gen-bench-")) / shape, device)
    built = time.perf_counter() - started
    options: dict[str, Any] = {"manifest": "off"}
    if args.dtype:
        options["dtype"] = args.dtype
    generator = load_generator("transformers", model_path, **options)
    parameters = sum(p.numel() for p in generator.model.parameters())
    device_name = torch.cuda.get_device_name(device) if on_gpu else f"CPU ({torch.get_num_threads()} torch threads)"
    print(f"model: {shape or model_path}, {parameters / 1e6:.1f}M parameters, {generator.dtype}, on {device_name}"
          f" (built/loaded in {built:.0f}s); {new_tokens} new tokens per request")

    try:
        from inference.pool import GenerationPool

        pool: Any = GenerationPool(generator, max_batch=max(levels), max_wait=0.01, max_queue=4 * max(levels))
        pool_kind = "inference.pool.GenerationPool"
    except ImportError:  # before the pool existed: the in-process path, one request at a time
        pool, pool_kind = _SerialPath(generator), "inference.api.stream (serial)"

    # Warm-up: kernels, allocator, tokenizer caches.
    warm = requests(2, 4)
    run_bare(generator, warm)
    run_pool(pool, warm)

    rows: list[dict[str, Any]] = []
    for concurrency in levels:
        batch = requests(concurrency, new_tokens)
        bare = measure("bare", lambda b: run_bare(generator, b), batch, repeats)
        through_pool = measure("pool", lambda b: run_pool(pool, b), batch, repeats)
        rows.append({
            "concurrency": concurrency,
            "pool_tok_s": through_pool["tokens_per_s"],
            "bare_tok_s": bare["tokens_per_s"],
            "pool/bare": through_pool["tokens_per_s"] / bare["tokens_per_s"],
            "pool_ttft_s": through_pool["ttft"],
            "bare_ttft_s": bare["ttft"],
            "pool_tokens": through_pool["tokens"],
            "bare_tokens": bare["tokens"],
        })
    base = {"pool": rows[0]["pool_tok_s"], "bare": rows[0]["bare_tok_s"]}
    for row in rows:
        row["pool_x_c1"] = row["pool_tok_s"] / base["pool"]
        row["bare_x_c1"] = row["bare_tok_s"] / base["bare"]
    if hasattr(pool, "batch_sizes"):
        print(f"forward passes by batch size (pool): {dict(sorted(pool.batch_sizes.items()))}")
        pool.close()
    print_table(f"Generation throughput, {device_name}, via {pool_kind}", rows)
    write_json(args.json, {
        "device": device_name, "model": shape or model_path, "parameters": parameters,
        "dtype": str(generator.dtype), "new_tokens": new_tokens, "repeats": repeats,
        "pool": pool_kind, "rows": rows,
    })


class _SerialPath:
    """The in-process path without a pool: ``inference.api.stream`` in threads (the model lock serialises)."""

    def __init__(self, generator: Any) -> None:
        self.generator = generator

    def submit(self, request: Any) -> Any:
        return _SerialTicket(self.generator, request)


class _SerialTicket:
    def __init__(self, generator: Any, request: Any) -> None:
        self.generator, self.request = generator, request

    def events(self, timeout: float | None = None) -> Any:
        from inference.api import stream

        pieces = []
        for event in stream(self.generator, self.request):
            pieces.append(event.text)
            yield {"event": "token", "text": event.text}
        tokens = len(self.generator.tokenizer.encode("".join(pieces), add_special_tokens=False))
        yield {"event": "done", "metrics": {"tokens": tokens}}


if __name__ == "__main__":
    main()
