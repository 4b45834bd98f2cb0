"""A tiny, randomly initialised BERT cross-encoder built on the fly for tests.

Nothing is downloaded: the WordPiece tokenizer is trained here (``tokenizers``)
on the words the tests use, the weights are random with a fixed seed, and the
directory is written with ``save_pretrained`` — the layout of any
sentence-transformers CrossEncoder directory, loaded through the same code
users' rerankers go through.  Its scores mean nothing, which is the point: a
test can only pass if the results follow *this model's* scores.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_TEXT = (
    "the boiler descaling schedule monthly turbine hall maintenance window visitors badge front desk "
    "parental leave days holiday policy backup server password security invoice payment report "
    "cairn document passage secret budget meeting project deadline release version numbers"
)


def build_tiny_cross_encoder(dirpath: str | Path, *, seed: int = 0) -> Path:
    path = Path(dirpath)
    path.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator([_TEXT] * 3, trainers.WordPieceTrainer(vocab_size=300, special_tokens=SPECIALS,
                                                                    show_progress=False))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tokenizer = BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                  sep_token="[SEP]", mask_token="[MASK]", model_max_length=128)
    tokenizer.save_pretrained(path)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, num_labels=1,
                        initializer_range=0.5)  # large weights: scores spread out, no ties
    BertForSequenceClassification(config).eval().save_pretrained(path)
    return path


def direct_scores(path: Path, query: str, passages: list[str]) -> list[float]:
    """The model's own relevance logits, computed with plain transformers (the test oracle)."""
    tokenizer = BertTokenizerFast.from_pretrained(path)
    model = BertForSequenceClassification.from_pretrained(path).eval()
    with torch.no_grad():
        batch = tokenizer([query] * len(passages), passages, padding=True, truncation=True, max_length=128,
                          return_tensors="pt")
        return model(**batch).logits[:, 0].tolist()
