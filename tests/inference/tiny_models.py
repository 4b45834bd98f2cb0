"""Tiny, randomly initialised Qwen2 models built on the fly for tests.

Nothing is downloaded: the tokenizer is a byte-level BPE trained here on
generated English text and the weights are random (fixed seed). The model
talks nonsense, but it exercises the real loading, chat-template, generation
and streaming code paths that a DeepSeek-R1-Distill-Qwen model uses.

Invariants:
* the same arguments always produce the same files (deterministic corpus,
  deterministic BPE training, fixed torch seed), so greedy output is stable;
* ``<think>`` and ``</think>`` are *added but not special* tokens, as in the
  DeepSeek-R1-Distill and Qwen3 tokenizers: ``skip_special_tokens=True``
  must keep them, otherwise reasoning could not be separated downstream;
* building takes well under a second on a laptop CPU.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
THINK_TOKENS = ("<think>", "</think>")

# Qwen2.5-style ChatML. The reasoning variant ends the generation prompt with
# an opened think block, as the DeepSeek-R1-Distill templates do, so that the
# model's output carries only the closing tag.
_CHATML = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if opens_think %}{{- '<think>\\n' }}{%- endif %}{%- endif %}"
)
QWEN_CHAT_TEMPLATE = _CHATML.replace("opens_think", "false")
R1_CHAT_TEMPLATE = _CHATML.replace("opens_think", "true")

_WORDS = (
    "the a an of to in on for with from by about what which who when where why how is are was were "
    "be been has have had do does did can could should would will may must not no yes and or but if "
    "then than this that these those it its they them their we our you your he she his her "
    "document documents passage passages page pages section heading title question questions answer "
    "answers cite cites citation source sources claim claims language model models reasoning think "
    "policy policies holiday holidays leave days employee employees manager team office remote work "
    "contract contracts invoice invoices payment payments budget report reports meeting meetings "
    "security password access server backup data database network user users account accounts "
    "project projects deadline release version install configure update delete create read write "
    "know knows unknown only every each number numbers one two three four five ten twenty year month "
    "week day time first last new old good large small important required allowed approved"
).split()


def _corpus(lines: int = 400, seed: int = 0) -> list[str]:
    """Deterministic pseudo-English with the punctuation and markers prompts contain."""
    rng = random.Random(seed)
    out: list[str] = []
    for i in range(lines):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(6, 16))]
        sentence = " ".join(words).capitalize() + rng.choice((".", "?", "!", ".", "."))
        if i % 3 == 0:
            sentence += f" [{rng.randint(1, 9)}]"
        if i % 7 == 0:
            header = f"[{rng.randint(1, 9)}] (Handbook {i}, p. {rng.randint(1, 99)} › Section)"
            sentence = f"{header}\n{sentence}"
        out.append(sentence)
    return out


def _train_tokenizer(vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    return tok


def build_tiny_qwen2(
    dirpath: str | Path, *, reasoning: bool = False, vocab_size: int = 800, seed: int = 0,
    max_positions: int = 2048, endless: bool = False,
) -> str:
    """Write a tiny random Qwen2 model + tokenizer into ``dirpath`` and return it as a string.

    ``reasoning=True`` gives it an R1-style chat template whose generation
    prompt opens ``<think>``; name the directory like ``deepseek-r1-…`` too
    if the name-based DeepSeek-R1 heuristic should apply. ``max_positions``
    bounds prompt + answer (default rotary embeddings: the weights and the
    text generated within the first 2048 positions do not depend on it).

    ``endless=True``: the model never writes its end-of-text (or padding)
    token, so a generation runs to its token budget — for tests that must
    catch one still running (a hang-up, a killed worker, a time limit). This
    random model otherwise ends after ~400 tokens, which a fast host writes in
    a quarter of a second. The two tokens' rows of the (tied) embedding are
    zero, so their logit is always 0, and greedy decoding picks one only if
    all ~800 other logits were negative at once.
    """
    path = Path(dirpath)
    path.mkdir(parents=True, exist_ok=True)

    vocab, eos_id, pad_id = _save_tokenizer(path, vocab_size, R1_CHAT_TEMPLATE if reasoning else QWEN_CHAT_TEMPLATE)
    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        # At the default 0.02 a random model this small collapses into one
        # repeated token (twenty "\n", stripped to an empty answer); wider
        # weights give varied text, which the streaming tests need.
        initializer_range=0.5,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    return _save_model(path, Qwen2ForCausalLM, config, seed=seed, eos_id=eos_id, pad_id=pad_id,
                       silenced=(eos_id, pad_id) if endless else ())


def build_tiny_deepseek_v3(dirpath: str | Path, *, vocab_size: int = 800, seed: int = 0) -> str:
    """Write a tiny random DeepseekV3 (MLA attention, a dense layer then a MoE layer) + R1-style tokenizer.

    The architecture is the real one of DeepSeek-V3/R1 (``DeepseekV3ForCausalLM``),
    shrunk to a few hundred kilobytes; the chat template opens ``<think>``
    as DeepSeek-R1's does. Same determinism guarantees as ``build_tiny_qwen2``.
    """
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    path = Path(dirpath)
    path.mkdir(parents=True, exist_ok=True)
    vocab, eos_id, pad_id = _save_tokenizer(path, vocab_size, R1_CHAT_TEMPLATE)
    config = DeepseekV3Config(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        moe_intermediate_size=32,
        num_hidden_layers=2,
        first_k_dense_replace=1,  # layer 0 dense, layer 1 mixture-of-experts
        num_attention_heads=4,
        num_key_value_heads=4,
        n_routed_experts=4,
        num_experts_per_tok=2,
        n_shared_experts=1,
        n_group=2,
        topk_group=1,
        kv_lora_rank=16,
        q_lora_rank=32,
        qk_rope_head_dim=8,
        qk_nope_head_dim=16,
        v_head_dim=16,
        max_position_embeddings=2048,
        initializer_range=0.5,  # see build_tiny_qwen2: varied text rather than one repeated token
        bos_token_id=pad_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    return _save_model(path, DeepseekV3ForCausalLM, config, seed=seed, eos_id=eos_id, pad_id=pad_id)


def save_tiny_tokenizer(dirpath: str | Path, *, reasoning: bool = False, vocab_size: int = 800) -> tuple[int, int, int]:
    """Only the tokenizer of ``build_tiny_qwen2`` into ``dirpath``: (vocabulary size, eos id, pad id).

    For a model built elsewhere around it (``benchmarks/gpu/generation.py`` builds
    a random-weight 7B on the GPU and needs a tokenizer that nothing downloads).
    """
    path = Path(dirpath)
    path.mkdir(parents=True, exist_ok=True)
    return _save_tokenizer(path, vocab_size, R1_CHAT_TEMPLATE if reasoning else QWEN_CHAT_TEMPLATE)


def _save_tokenizer(path: Path, vocab_size: int, chat_template: str) -> tuple[int, int, int]:
    """Train and save the ChatML-style tokenizer; returns (vocabulary size, eos id, pad id)."""
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer(vocab_size),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(path)
    return (len(tokenizer), tokenizer.convert_tokens_to_ids("<|im_end|>"),
            tokenizer.convert_tokens_to_ids("<|endoftext|>"))


def _save_model(path: Path, model_class: type, config: object, *, seed: int, eos_id: int, pad_id: int,
                silenced: tuple[int, ...] = ()) -> str:
    # fork_rng: seeding must not disturb the global RNG of the test session.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    with torch.no_grad():
        for token_id in silenced:
            model.get_output_embeddings().weight[token_id] = 0.0
    model.generation_config = GenerationConfig(eos_token_id=[eos_id, pad_id], pad_token_id=pad_id)
    model.save_pretrained(path)
    return str(path)
