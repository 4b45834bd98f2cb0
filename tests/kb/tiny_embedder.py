"""A tiny, randomly initialised sentence-transformers model built on the fly (nothing downloaded).

It borrows the bundled all-MiniLM-L6-v2 tokenizer and has a 1-layer, 32-wide
BERT: its embeddings are meaningless but it loads, batches and encodes
exactly like a real model, with a different dimension (32 vs 384).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch


def build_tiny_embedder(target: Path, *, dim: int = 32, seed: int = 0, words: Iterable[str] | None = None) -> Path:
    """``words``: a WordPiece vocabulary of these words (and their letters) instead of the bundled
    model's tokenizer, for hosts where the bundled model is not installed (a GPU test machine)."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel, BertTokenizerFast

    from kb.retrieval.embedding import bundled_model_path

    if words is None:
        tokenizer = AutoTokenizer.from_pretrained(str(bundled_model_path()))
    else:
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set("abcdefghijklmnopqrstuvwxyz0123456789.,;"))]
        vocab += sorted({w.lower() for w in words} - set(vocab))
        tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=dim, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=2 * dim, max_position_embeddings=512)
    torch.manual_seed(seed)
    hf_dir = target / "hf"
    BertModel(config).save_pretrained(str(hf_dir))
    tokenizer.save_pretrained(str(hf_dir))
    word = models.Transformer(str(hf_dir), max_seq_length=256)
    width = getattr(word, "get_embedding_dimension", None) or word.get_word_embedding_dimension
    pooling = models.Pooling(width(), "mean")
    model_dir = target / "tiny-embedder"
    SentenceTransformer(modules=[word, pooling]).save(str(model_dir))
    return model_dir
