"""Generation at 7B scale on a GPU: Cairn's batching pool vs bare ``model.generate`` (issue 16).

    python benchmarks/gpu/generation.py --arch qwen2-7b --json gen.json              # a CUDA host, bf16
    python benchmarks/gpu/generation.py --arch deepseek-v3-small --json deepseekv3.json
    python benchmarks/gpu/generation.py --arch qwen2-7b --tiny                       # same code, tiny, any CPU

The model is built from its configuration with random weights directly on
the device (nothing is downloaded or read: the accelerator machine has no
network), in bf16 on a GPU that computes it natively (fp32 on a CPU):

* ``qwen2-7b`` — DeepSeek-R1-Distill-Qwen-7B's published ``config.json``:
  Qwen2, hidden 3584, 28 layers, 28 heads, 4 KV heads, intermediate 18944,
  vocabulary 152064 (7.6B parameters, 15.2 GB in bf16);
* ``deepseek-v3-small`` — DeepSeek-V3/R1's own architecture (MLA attention,
  a dense first layer, then mixture-of-experts layers with shared experts
  and grouped routing), shrunk to 0.7B parameters: 8 layers, 32 routed
  experts of which 4 are active, vocabulary 129280.

``--tiny`` keeps the architecture and shrinks every dimension, so that the
whole path runs on a laptop CPU in seconds (``tests/gpu`` runs it so).

The tokenizer is the test suite's byte-level BPE (``tests/inference/
tiny_models.py``: 800 tokens, trained on the spot). Its ids are the first
ids of the model's vocabulary; the output layer's rows for every other id,
for end-of-sequence and for padding are zeroed, so a random model never
stops early and never writes an id the tokenizer cannot decode: every
request generates exactly ``--new-tokens`` tokens on both paths, and the
throughputs compare equal work.

For each concurrency ``c`` the same ``c`` requests (a question and Cairn's
usual four passages, greedy) are generated on both paths:

* **pool** — submitted at once to ``inference.pool.GenerationPool``, the
  path every ask takes (tokenization and packing, dynamic batching, the
  text streamer, events, metrics), each ticket read by its own thread as
  the team worker's threads do; TTFT is from submission to the request's
  first streamed piece, as a client sees it (p50 and p95 over requests);
* **bare** — the same prompts, tokenized beforehand, left-padded into one
  ``model.generate`` call (static batching and nothing else: the best a
  caller of the bare model could do); its TTFT is the time to the first
  decoding step's end, the same for every row.

Throughput is the median of ``--repeats`` runs after a warm-up at the same
concurrency; peak GPU memory is ``torch.cuda.max_memory_allocated`` over a
path's runs at a concurrency. The issue's targets are computed as ratios
and printed PASS/FAIL: pool ≥ 0.9 × bare at c=1; pool's c=16 throughput
≥ 4 × its c=1 throughput; pool's TTFT p50 at c=16 ≤ 2 × at c=1.

The JSON (``--json``) is rewritten after every concurrency level, so a run
cut short by a time limit still leaves the levels it finished;
``--max-seconds`` skips the remaining levels once that much time has passed.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks._setup import print_table  # noqa: E402

# The published config.json values of the models named (their sizes; no weights are read).
ARCHS: dict[str, tuple[str, dict[str, Any]]] = {
    "qwen2-7b": ("qwen2", dict(  # deepseek-ai/DeepSeek-R1-Distill-Qwen-7B
        hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
        num_key_value_heads=4, vocab_size=152064, max_position_embeddings=131072,
        rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=False,
    )),
    "deepseek-v3-small": ("deepseek_v3", dict(  # DeepSeek-V3's layout, 0.7B parameters
        hidden_size=1024, intermediate_size=2816, moe_intermediate_size=512, num_hidden_layers=8,
        first_k_dense_replace=1, num_attention_heads=16, num_key_value_heads=16,
        n_routed_experts=32, num_experts_per_tok=4, n_shared_experts=1, n_group=4, topk_group=2,
        kv_lora_rank=256, q_lora_rank=384, qk_rope_head_dim=64, qk_nope_head_dim=128, v_head_dim=128,
        vocab_size=129280, max_position_embeddings=163840, tie_word_embeddings=False,
    )),
}
# --tiny: the same architectures with every dimension shrunk (vocabulary 0: the tokenizer's).
TINY: dict[str, dict[str, Any]] = {
    "qwen2-7b": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=0, max_position_embeddings=4096),
    "deepseek-v3-small": dict(
        hidden_size=64, intermediate_size=128, moe_intermediate_size=32, num_hidden_layers=2,
        first_k_dense_replace=1, num_attention_heads=4, num_key_value_heads=4, n_routed_experts=4,
        num_experts_per_tok=2, n_shared_experts=1, n_group=2, topk_group=1, kv_lora_rank=16,
        q_lora_rank=32, qk_rope_head_dim=8, qk_nope_head_dim=16, v_head_dim=16, vocab_size=0,
        max_position_embeddings=4096,
    ),
}
TARGETS = (
    # (name, what, threshold, higher is better)
    ("pool_vs_bare_c1", "pool tok/s ÷ bare tok/s at c=1", 0.9, True),
    ("pool_c16_vs_c1", "pool tok/s at c=16 ÷ at c=1", 4.0, True),
    ("pool_ttft_p50_c16_vs_c1", "pool TTFT p50 at c=16 ÷ at c=1", 2.0, False),
)


# --- the model ------------------------------------------------------------------------

def build(arch: str, directory: Path, device: torch.device, dtype: torch.dtype, *, tiny: bool) -> Any:
    """A generator around a random-weight ``arch`` built on ``device``; ``directory`` gets config + tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from inference.backends.transformers_backend import _DTYPE_KWARG, TransformersGenerator
    from tests.inference.tiny_models import save_tiny_tokenizer

    vocab, eos, pad = save_tiny_tokenizer(directory)
    model_type, dims = ARCHS[arch]
    dims = {**dims, **(TINY[arch] if tiny else {})}
    dims["vocab_size"] = dims["vocab_size"] or vocab
    config = AutoConfig.for_model(model_type, **dims, eos_token_id=eos, pad_token_id=pad, bos_token_id=pad,
                                  # At 0.02 a tiny random model repeats one token; any width works at 7B.
                                  initializer_range=0.5 if tiny else 0.02)
    config.save_pretrained(directory)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, **{_DTYPE_KWARG: dtype})
    model.to(device)  # a no-op when the context placed it; older transformers may build on the CPU
    model.eval()
    with torch.no_grad():
        # Never pick end-of-sequence, padding or ids the tokenizer cannot decode (see the docstring).
        head = model.get_output_embeddings().weight
        head[vocab:] = 0
        head[[eos, pad]] = 0
        head[:vocab] += 0.05 * head[:vocab].sign()  # keep the real ids' logits off zero
    model.generation_config = GenerationConfig(eos_token_id=[eos, pad], pad_token_id=pad)

    class BuiltGenerator(TransformersGenerator):
        """Cairn's transformers backend serving the model built above (config + tokenizer on disk only)."""

        def _check_files(self) -> None:
            pass  # no weight files: the weights live on the device

        def _load(self) -> tuple[Any, Any]:
            return AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True), model

    name = {torch.bfloat16: "bfloat16", torch.float16: "float16"}.get(dtype, "float32")
    return BuiltGenerator(directory, device=str(device), dtype=name, manifest="off")


def requests(count: int, new_tokens: int) -> list[Any]:
    from inference.types import GenerationRequest, Passage

    texts = [
        "Employees get twenty holiday days a year; managers approve leave requests in advance.",
        "Remote work is allowed two days a week when the team agrees on the schedule.",
        "Backups of every database run each night and are kept for thirty days.",
        "Security updates are installed on every server within a week of release.",
    ]
    passages = tuple(
        Passage(number=i + 1, chunk_id=i + 1, document_id=1, title=f"Handbook {i + 1}", page=i + 1,
                heading="Policy", text=text)
        for i, text in enumerate(texts)
    )
    questions = ["How many holiday days do employees get?", "When can people work remotely?",
                 "How long are backups kept?", "When are security updates installed?"]
    return [
        GenerationRequest(question=f"{questions[i % 4]} (request {i})", passages=passages,
                          max_new_tokens=new_tokens, request_id=f"bench-{i}")
        for i in range(count)
    ]


# --- the two paths -----------------------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_bare(generator: Any, batch: list[Any]) -> dict[str, Any]:
    """One left-padded ``model.generate`` over the whole batch (prompts tokenized before the clock starts)."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    encoded = [generator.encode(r)["input_ids"][0] for r in batch]
    width = max(len(ids) for ids in encoded)
    pad = generator.tokenizer.pad_token_id
    input_ids = torch.full((len(batch), width), pad, dtype=torch.long, device=generator.device)
    mask = torch.zeros((len(batch), width), dtype=torch.long, device=generator.device)
    for row, ids in enumerate(encoded):
        input_ids[row, width - len(ids):] = ids
        mask[row, width - len(ids):] = 1
    first: list[float] = []

    class FirstStep(StoppingCriteria):
        def __call__(self, ids: Any, scores: Any, **kwargs: Any) -> Any:
            if not first:
                _sync(generator.device)
                first.append(time.perf_counter())
            return torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)

    eos = set(generator.model.generation_config.eos_token_id or [])
    _sync(generator.device)
    start = time.perf_counter()
    with torch.inference_mode():
        output = generator.model.generate(
            input_ids=input_ids, attention_mask=mask, max_new_tokens=batch[0].max_new_tokens,
            do_sample=False, pad_token_id=pad, stopping_criteria=StoppingCriteriaList([FirstStep()]),
        )
    _sync(generator.device)
    elapsed = time.perf_counter() - start
    tokens = 0
    for row in output[:, width:].tolist():
        for token in row:
            tokens += 1
            if token in eos:
                break
    ttft = (first[0] - start) if first else elapsed
    return {"tokens": tokens, "seconds": elapsed, "ttfts": [ttft] * len(batch),
            "prompt_tokens": [len(ids) for ids in encoded]}


def run_pool(pool: Any, batch: list[Any]) -> dict[str, Any]:
    """Submit the batch at once to the pool and read every ticket in its own thread."""
    results: list[dict[str, Any]] = []
    lock = threading.Lock()
    start = time.perf_counter()
    tickets = [pool.submit(r) for r in batch]

    def consume(ticket: Any) -> None:
        first = None
        final: dict[str, Any] = {}
        for event in ticket.events(timeout=600):
            if first is None and event["event"] in ("token", "reasoning"):
                first = time.perf_counter()
            if event["event"] in ("done", "error"):
                final = event
        with lock:
            results.append({"first": first, "final": final})

    threads = [threading.Thread(target=consume, args=(t,)) for t in tickets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    errors = [r["final"] for r in results if r["final"].get("event") != "done"]
    if errors:
        raise RuntimeError(f"pool requests failed: {errors[:2]}")
    metrics = [r["final"]["metrics"] for r in results]
    return {
        "tokens": sum(int(m["tokens"]) for m in metrics),
        "seconds": elapsed,
        "ttfts": [(r["first"] if r["first"] is not None else start + elapsed) - start for r in results],
        "queue_wait_s": statistics.median(float(m["queue_wait_s"]) for m in metrics),
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def measure(run: Any, batch: list[Any], repeats: int, device: torch.device) -> dict[str, Any]:
    """Median throughput over ``repeats`` runs, TTFT percentiles over every request of them, peak memory."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    runs = [run(batch) for _ in range(repeats)]
    runs.sort(key=lambda r: r["tokens"] / r["seconds"])
    median = runs[len(runs) // 2]
    ttfts = [t for r in runs for t in r["ttfts"]]
    result = {
        "tokens": median["tokens"], "seconds": median["seconds"],
        "tokens_per_s": median["tokens"] / median["seconds"],
        "ttft_p50": percentile(ttfts, 0.5), "ttft_p95": percentile(ttfts, 0.95),
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }
    for key in ("queue_wait_s", "prompt_tokens"):
        if key in median:
            result[key] = median[key]
    return result


# --- the report --------------------------------------------------------------------------

def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_c = {row["concurrency"]: row for row in rows}
    both = 1 in by_c and 16 in by_c

    def ratio(key: str) -> float | None:
        return by_c[16][key] / by_c[1][key] if both else None

    # (value, what bare generate gives for the same ratio: what the card and model allow)
    values: dict[str, tuple[float | None, float | None]] = {
        "pool_vs_bare_c1": (by_c[1]["pool/bare"] if 1 in by_c else None, 1.0 if 1 in by_c else None),
        "pool_c16_vs_c1": (ratio("pool_tok_s"), ratio("bare_tok_s")),
        "pool_ttft_p50_c16_vs_c1": (ratio("pool_ttft_p50"), ratio("bare_ttft")),
    }
    out = []
    for name, what, threshold, higher in TARGETS:
        value, bare = values[name]
        verdict = "not measured" if value is None else (
            "PASS" if (value >= threshold if higher else value <= threshold) else "FAIL")
        out.append({"target": name, "what": what, "threshold": threshold, "higher_is_better": higher,
                    "value": value, "bare_value": bare, "verdict": verdict})
    return out


def device_description(device: torch.device) -> dict[str, Any]:
    import transformers

    info: dict[str, Any] = {"torch": torch.__version__, "transformers": transformers.__version__,
                            "python": platform.python_version()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, capability=f"{props.major}.{props.minor}",
                    total_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda,
                    multiprocessors=props.multi_processor_count)
    else:
        info.update(name=f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads)")
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=sorted(ARCHS), default="qwen2-7b")
    parser.add_argument("--tiny", action="store_true", help="every dimension shrunk: runs anywhere in seconds")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when there is one)")
    parser.add_argument("--concurrency", default=None,
                        help="levels, run in this order; default: 1,4,16,64 (--tiny: 1,4,16)")
    parser.add_argument("--new-tokens", type=int, default=None, help="per request; default 128 (--tiny: 16)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per path and level; default 2 (--tiny: 1)")
    parser.add_argument("--warmup-tokens", type=int, default=4, help="a warm-up run per path and level first")
    parser.add_argument("--max-wait-ms", type=float, default=10.0,
                        help="the pool's wait for company when idle (CAIRN_GEN_BATCH_WAIT_MS; default 10 as there)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="skip the levels not started when this much time has passed")
    parser.add_argument("--json", help="write the results as JSON here (rewritten after each level)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    device = torch.device(args.device or ("cuda:0" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    from inference.backends.transformers_backend import bf16_native

    dtype = (torch.bfloat16 if bf16_native() else torch.float16) if device.type == "cuda" else torch.float32
    levels = [int(c) for c in (args.concurrency or ("1,4,16" if args.tiny else "1,4,16,64")).split(",")]
    new_tokens = args.new_tokens or (16 if args.tiny else 128)
    repeats = args.repeats or (1 if args.tiny else 2)

    generator = build(args.arch, Path(tempfile.mkdtemp(prefix="cairn-gpu-gen-")) / args.arch, device, dtype,
                      tiny=args.tiny)
    _sync(device)
    built_s = time.perf_counter() - started
    parameters = sum(p.numel() for p in generator.model.parameters())
    weights_gib = torch.cuda.memory_allocated(device) / 2**30 if device.type == "cuda" else None
    described = device_description(device)
    label = f"{args.arch}{' (tiny)' if args.tiny else ''}"
    print(f"model: {label}, {parameters / 1e6:,.1f}M parameters, {dtype}, on {described['name']}; "
          f"built in {built_s:.1f}s; {new_tokens} new tokens per request, {repeats} repeats", flush=True)

    from inference.pool import GenerationPool

    pool = GenerationPool(generator, max_batch=max(levels), max_wait=args.max_wait_ms / 1000,
                          max_queue=4 * max(levels))
    payload: dict[str, Any] = {
        "benchmark": "generation", "arch": args.arch, "tiny": args.tiny, "device": described,
        "parameters": parameters, "dtype": str(dtype), "weights_gib": weights_gib,
        "config": {k: v for k, v in generator.model.config.to_dict().items()
                   if isinstance(v, int | float | str) and not k.startswith("_")},
        # The MoE experts' kernels as transformers chose them (absent on dense models and older versions).
        "experts_implementation": getattr(generator.model.config, "_experts_implementation", None),
        "new_tokens": new_tokens, "repeats": repeats, "concurrency": levels, "build_s": built_s,
        "pool_max_batch": pool.max_batch, "pool_max_wait_ms": args.max_wait_ms,
        "rows": [], "skipped": [], "failed": {}, "targets": [],
    }

    def save() -> None:
        payload["total_s"] = time.perf_counter() - started
        if args.json:
            Path(args.json).write_text(json.dumps(payload, indent=2, default=str))

    rows: list[dict[str, Any]] = payload["rows"]
    try:
        for concurrency in levels:
            if args.max_seconds and time.perf_counter() - started > args.max_seconds:
                payload["skipped"].append(concurrency)
                print(f"c={concurrency}: skipped, {args.max_seconds:.0f}s have passed", flush=True)
                continue
            level_start = time.perf_counter()
            passes_before = sum(pool.batch_sizes.values())
            try:
                warm = requests(concurrency, args.warmup_tokens)
                run_bare(generator, warm)
                run_pool(pool, warm)
                passes_before = sum(pool.batch_sizes.values())
                batch = requests(concurrency, new_tokens)
                bare = measure(lambda b: run_bare(generator, b), batch, repeats, device)
                through_pool = measure(lambda b: run_pool(pool, b), batch, repeats, device)
            except Exception as exc:  # one run on a lent card: record it (CUDA out of memory…), go on
                traceback.print_exc()
                payload["failed"][str(concurrency)] = f"{type(exc).__name__}: {exc}"[:2000]
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                save()
                continue
            row = {
                "concurrency": concurrency,
                "pool_tok_s": through_pool["tokens_per_s"],
                "bare_tok_s": bare["tokens_per_s"],
                "pool/bare": through_pool["tokens_per_s"] / bare["tokens_per_s"],
                "pool_ttft_p50": through_pool["ttft_p50"],
                "pool_ttft_p95": through_pool["ttft_p95"],
                "bare_ttft": bare["ttft_p50"],
                "pool_peak_gib": through_pool["peak_gib"],
                "bare_peak_gib": bare["peak_gib"],
                "tokens": through_pool["tokens"],
                "expected": concurrency * new_tokens,
                "prompt_tokens": statistics.mean(bare["prompt_tokens"]),
                "pool_queue_wait": through_pool["queue_wait_s"],
                "pool_passes": sum(pool.batch_sizes.values()) - passes_before,
                "level_s": time.perf_counter() - level_start,
            }
            if bare["tokens"] != row["expected"] or through_pool["tokens"] != row["expected"]:
                print(f"c={concurrency}: WARNING tokens pool {through_pool['tokens']}, bare {bare['tokens']}, "
                      f"expected {row['expected']}", flush=True)
            rows.append(row)
            rows.sort(key=lambda r: r["concurrency"])
            base = rows[0]  # c=1 when it ran: the levels may run in any order (run.sh: the targets' first)
            for r in rows:
                r["pool_x_c1"] = r["pool_tok_s"] / base["pool_tok_s"]
                r["bare_x_c1"] = r["bare_tok_s"] / base["bare_tok_s"]
            payload["targets"] = targets(rows)
            save()
            print(f"c={concurrency}: pool {row['pool_tok_s']:.1f} tok/s, bare {row['bare_tok_s']:.1f} tok/s, "
                  f"pool TTFT p50 {row['pool_ttft_p50']:.3f}s, in {row['level_s']:.1f}s", flush=True)
    finally:
        pool.close()
    payload["forward_passes_by_batch_size"] = dict(sorted(pool.batch_sizes.items()))
    save()
    columns = ("concurrency", "pool_tok_s", "bare_tok_s", "pool/bare", "pool_ttft_p50", "pool_ttft_p95",
               "bare_ttft", "pool_peak_gib", "bare_peak_gib", "pool_x_c1", "bare_x_c1", "tokens", "expected")
    print_table(f"Generation, {label}, {dtype}, on {described['name']}",
                [{k: r[k] for k in columns} for r in rows])
    print("\nTargets (issue 16):")
    for target in payload["targets"]:
        value = "-" if target["value"] is None else f"{target['value']:.3f}"
        reference = "-" if target["bare_value"] is None else f"{target['bare_value']:.3f}"
        sign = "≥" if target["higher_is_better"] else "≤"
        print(f"  {target['verdict']:<12} {target['what']}: {value} (target {sign} {target['threshold']}; "
              f"bare generate: {reference})")
    if args.json:
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
