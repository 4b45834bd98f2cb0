"""Retrieval evaluation on a BEIR-layout dataset, through Cairn's real ingestion and search.

A dataset directory holds ``corpus.jsonl`` (``_id``, ``title``, ``text``),
``queries.jsonl`` (``_id``, ``text``) and ``qrels/<split>.tsv``
(``query-id  corpus-id  score`` with a header).  Each corpus entry becomes a
Markdown document named ``<_id>.md`` (title as its heading); chunk hits are
folded to documents by their best rank, as BEIR scores documents.

Modes: ``lexical``, ``dense`` and ``hybrid`` score the fused list without the
cross-encoder (``hybrid`` fused as ``CAIRN_FUSION`` says, or as ``fusion``);
``reranked`` is ``hybrid`` plus the configured reranker (``CAIRN_RERANKER``) —
exactly what a user's search returns.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from access.models import User
from kb.models import Collection
from kb.retrieval.fusion import FusionConfig
from kb.search import chunk_search
from kb.selectors import readable_documents

MODES = ("lexical", "dense", "hybrid", "reranked")


class DatasetError(Exception):
    """The directory is not a readable BEIR dataset; the message says which file and line."""


@dataclass
class Dataset:
    corpus: dict[str, tuple[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            except RecursionError:
                raise DatasetError(f"{path}:{number}: JSON nested too deeply") from None
            if not isinstance(row, dict) or "_id" not in row:
                raise DatasetError(f"{path}:{number}: each line must be a JSON object with an \"_id\"")
            yield number, row


def load_beir(path: Path, split: str = "test") -> Dataset:
    """Read a BEIR dataset directory; raises ``DatasetError`` naming the missing or malformed file."""
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"{path} is not a directory")
    qrels_path = path / "qrels" / f"{split}.tsv"
    for required in (path / "corpus.jsonl", path / "queries.jsonl", qrels_path):
        if not required.is_file():
            splits = sorted(p.stem for p in (path / "qrels").glob("*.tsv")) if (path / "qrels").is_dir() else []
            hint = f" (splits present: {', '.join(splits)})" if splits and required == qrels_path else ""
            raise DatasetError(f"{path} is not a BEIR dataset: {required.relative_to(path)} is missing{hint}")
    try:
        corpus: dict[str, tuple[str, str]] = {}
        for _, row in jsonl_rows(path / "corpus.jsonl"):
            corpus[str(row["_id"])] = (str(row.get("title") or ""), str(row.get("text") or ""))
        qrels: dict[str, dict[str, int]] = defaultdict(dict)
        with open(qrels_path, encoding="utf-8") as handle:
            for number, fields in enumerate(csv.reader(handle, delimiter="\t"), 1):
                if not fields or not "".join(fields).strip():
                    continue
                if len(fields) != 3:
                    raise DatasetError(f"{qrels_path}:{number}: expected 3 tab-separated columns "
                                       f"(query-id, corpus-id, score), got {len(fields)}")
                query_id, doc_id, score = (f.strip() for f in fields)
                try:
                    qrels[query_id][doc_id] = int(score)
                except ValueError:
                    if number == 1:  # the header line
                        continue
                    raise DatasetError(f"{qrels_path}:{number}: score {score!r} is not an integer") from None
        queries: dict[str, str] = {}
        for _, row in jsonl_rows(path / "queries.jsonl"):
            if str(row["_id"]) in qrels:
                queries[str(row["_id"])] = str(row.get("text") or "")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: a file is not UTF-8 ({exc.reason})") from None
    if not corpus:
        raise DatasetError(f"{path / 'corpus.jsonl'} holds no documents")
    if not queries:
        raise DatasetError(f"no query of {qrels_path.relative_to(path)} appears in queries.jsonl")
    return Dataset(corpus=corpus, queries=queries, qrels={q: qrels[q] for q in queries})


def as_markdown(title: str, text: str) -> bytes:
    return (f"# {title}\n\n{text}\n" if title else f"{text}\n").encode("utf-8")


def ndcg_at(ranked: list[str], relevant: dict[str, int], k: int) -> float:
    dcg = sum(relevant.get(doc, 0) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum(rel / math.log2(i + 2) for i, rel in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at(ranked: list[str], relevant: dict[str, int], k: int) -> float:
    positives = {d for d, r in relevant.items() if r > 0}
    return len(positives & set(ranked[:k])) / len(positives) if positives else 0.0


def mrr_at(ranked: list[str], relevant: dict[str, int], k: int) -> float:
    for i, doc in enumerate(ranked[:k]):
        if relevant.get(doc, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


@dataclass
class ModeScores:
    mode: str
    ndcg10: float
    recall10: float
    recall100: float
    mrr10: float
    queries: int
    seconds: float
    per_query_ms: list[float] = field(default_factory=list)

    @property
    def p50_ms(self) -> float:
        ordered = sorted(self.per_query_ms)
        return ordered[len(ordered) // 2] if ordered else 0.0


def evaluate(
    dataset: Dataset, *, user: User, collection: Collection, modes: Iterable[str] = ("lexical", "dense", "hybrid"),
    depth: int = 200, fusion: FusionConfig | None = None,
) -> list[ModeScores]:
    """Scores per mode; ``fusion`` sets how ``hybrid``/``reranked`` fuse the legs (default: the settings')."""
    titles = dict(readable_documents(user, collection=collection).values_list("id", "title"))
    doc_key = {pk: title.removesuffix(".md") for pk, title in titles.items()}
    scores: list[ModeScores] = []
    for mode in modes:
        totals: defaultdict[str, float] = defaultdict(float)
        timings: list[float] = []
        started = time.perf_counter()
        for query_id, text in dataset.queries.items():
            t0 = time.perf_counter()
            hits = chunk_search(user, text, collection_ids=[collection.pk], k=depth,
                                mode="hybrid" if mode == "reranked" else mode, rerank=mode == "reranked",
                                fusion=fusion)
            timings.append((time.perf_counter() - t0) * 1000)
            ranked: list[str] = []
            seen: set[str] = set()
            for hit in hits:
                key = doc_key.get(hit.document_id)
                if key is not None and key not in seen:
                    seen.add(key)
                    ranked.append(key)
            relevant = dataset.qrels.get(query_id, {})
            totals["ndcg10"] += ndcg_at(ranked, relevant, 10)
            totals["recall10"] += recall_at(ranked, relevant, 10)
            totals["recall100"] += recall_at(ranked, relevant, 100)
            totals["mrr10"] += mrr_at(ranked, relevant, 10)
        n = max(1, len(dataset.queries))
        scores.append(ModeScores(
            mode=mode, ndcg10=totals["ndcg10"] / n, recall10=totals["recall10"] / n,
            recall100=totals["recall100"] / n, mrr10=totals["mrr10"] / n, queries=len(dataset.queries),
            seconds=time.perf_counter() - started, per_query_ms=timings,
        ))
    return scores
