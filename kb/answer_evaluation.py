"""Answer evaluation: a QA set with gold answers, asked through the real ask path, scored as SQuAD does.

The set is a BEIR-layout directory (``kb.evaluation.load_beir``) plus
``answers.jsonl`` — one ``{"_id": query id, "answers": [gold strings]}`` a
line, as ``benchmarks/squad_to_beir.py`` writes it. Every question is asked
with ``kb.answering.answer_question``, the function behind ``/api/v1/ask``
(permission-scoped retrieval, the evidence check, the generation pool with
its packing and bare-marker fallback), as the collection's owner.

Metrics, averaged over the questions:

* **EM** and **F1**: the official SQuAD v1.1/v2.0 script's — lower-case, drop
  punctuation (any Unicode punctuation, CJK included), the English articles
  and extra whitespace; token F1; the best over the gold answers. CJK text
  has no spaces, so each CJK character is a token of its own.
* **answer recall**: a gold answer, normalised, occurs in the normalised
  answer (as whole tokens) — what a reader can find in a longer answer.
* **citation precision**: of the passages an answer cites, the share that
  is relevant — the passage's document is a relevant document of the
  question (its qrels) or the passage contains a gold answer. Micro-averaged
  over every citation of every question; an answer that cites nothing adds
  nothing to it (``cited`` counts the citations behind the figure).

Before scoring, citation markers and the label line of an extractive answer
are removed: they are form, not content, and would lower F1 for nothing.
"""

from __future__ import annotations

import re
import statistics
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from access.models import User
from access.services import Actor
from inference.backends.extractive import LABEL
from inference.citations import is_bare_marker, strip_markers
from inference.fallback import FALLBACK_LABEL
from inference.types import Passage
from kb.answering import AskResult, answer_question
from kb.evaluation import Dataset, DatasetError, jsonl_rows
from kb.models import Collection
from kb.selectors import readable_documents

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_CJK_CHAR = re.compile(r"([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff])")
_LABELS = (LABEL, FALLBACK_LABEL)


def load_answers(path: Path) -> dict[str, list[str]]:
    """``answers.jsonl`` of a QA set: query id → gold answers; raises ``DatasetError`` naming the line."""
    if not path.is_file():
        raise DatasetError(
            f"{path.parent} has no answers.jsonl (gold answers); "
            "benchmarks/squad_to_beir.py writes one beside the BEIR files"
        )
    answers: dict[str, list[str]] = {}
    for number, row in jsonl_rows(path):  # one JSON object with an "_id" per line, or DatasetError
        gold = row.get("answers")
        if not isinstance(gold, list) or not gold or not all(isinstance(a, str) for a in gold):
            raise DatasetError(f'{path}:{number}: expected {{"_id": …, "answers": [non-empty list of strings]}}')
        answers[str(row["_id"])] = gold
    if not answers:
        raise DatasetError(f"{path} holds no gold answers")
    return answers


def normalize(text: str) -> str:
    """SQuAD's normalisation, Unicode-aware: lower, no punctuation, no articles, single spaces."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def tokens(text: str) -> list[str]:
    """Tokens of a normalised text: words, and each CJK character on its own."""
    return _CJK_CHAR.sub(r" \1 ", text).split()


def scoring_text(answer: str) -> str:
    """The answer as scored: without citation markers and without an extractive label line."""
    for label in _LABELS:
        if answer.startswith(label):
            answer = answer[len(label) :]
    return strip_markers(answer.replace("“", " ").replace("”", " "))


def exact_match(prediction: str, gold: Iterable[str]) -> float:
    predicted = tokens(normalize(prediction))
    return float(any(predicted == tokens(normalize(g)) for g in gold))


def f1(prediction: str, gold: Iterable[str]) -> float:
    predicted = tokens(normalize(prediction))
    best = 0.0
    for answer in gold:
        truth = tokens(normalize(answer))
        if not predicted or not truth:
            best = max(best, float(predicted == truth))
            continue
        common = sum((Counter(predicted) & Counter(truth)).values())
        if common:
            precision, recall = common / len(predicted), common / len(truth)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def contains_answer(text: str, gold: Iterable[str]) -> bool:
    """A gold answer occurs in ``text`` as a run of whole tokens, after normalisation."""
    haystack = " " + " ".join(tokens(normalize(text))) + " "
    return any(
        needle.strip() and f" {needle} " in haystack
        for needle in (" ".join(tokens(normalize(g))) for g in gold)
    )


@dataclass
class QuestionResult:
    query_id: str
    question: str
    answer: str
    gold: list[str]
    em: float
    f1: float
    recall: float
    cited: int
    cited_relevant: int
    bare_marker: bool
    fallback: str
    seconds: float


@dataclass
class AnswerScores:
    questions: list[QuestionResult] = field(default_factory=list)

    def _mean(self, attribute: str) -> float:
        values = [getattr(q, attribute) for q in self.questions]
        return sum(values) / len(values) if values else 0.0

    @property
    def em(self) -> float:
        return self._mean("em")

    @property
    def f1(self) -> float:
        return self._mean("f1")

    @property
    def recall(self) -> float:
        return self._mean("recall")

    @property
    def cited(self) -> int:
        return sum(q.cited for q in self.questions)

    @property
    def citation_precision(self) -> float:
        return sum(q.cited_relevant for q in self.questions) / self.cited if self.cited else 0.0

    @property
    def bare_markers(self) -> int:
        return sum(q.bare_marker for q in self.questions)

    @property
    def fallbacks(self) -> int:
        return sum(bool(q.fallback) for q in self.questions)

    @property
    def p50_s(self) -> float:
        return statistics.median(q.seconds for q in self.questions) if self.questions else 0.0

    def summary(self) -> dict[str, float | int]:
        return {
            "questions": len(self.questions),
            "em": self.em,
            "f1": self.f1,
            "answer_recall": self.recall,
            "citation_precision": self.citation_precision,
            "cited": self.cited,
            "bare_markers": self.bare_markers,
            "fallbacks": self.fallbacks,
            "p50_s": self.p50_s,
        }


def score_answer(
    *,
    query_id: str,
    question: str,
    answer: str,
    cited: Sequence[Passage],
    gold: list[str],
    relevant_documents: set[int],
    fallback: str = "",
    seconds: float = 0.0,
) -> QuestionResult:
    """One question's scores; ``relevant_documents`` are the Cairn ids of its qrels' documents."""
    scored = scoring_text(answer)
    relevant = sum(
        1 for p in cited if p.document_id in relevant_documents or contains_answer(p.text, gold)
    )
    return QuestionResult(
        query_id=query_id,
        question=question,
        answer=answer,
        gold=gold,
        em=exact_match(scored, gold),
        f1=f1(scored, gold),
        recall=float(contains_answer(scored, gold)),
        cited=len(cited),
        cited_relevant=relevant,
        bare_marker=is_bare_marker(answer),
        fallback=fallback,
        seconds=seconds,
    )


AskFunction = Callable[[str], AskResult]


def document_ids_by_key(user: User, collection: Collection) -> dict[str, int]:
    """Corpus id (the uploaded ``<_id>.md`` file name) → Cairn document id, for what ``user`` reads."""
    titles = readable_documents(user, collection=collection).values_list("id", "title")
    return {title.removesuffix(".md"): pk for pk, title in titles}


def evaluate_answers(
    dataset: Dataset,
    answers: dict[str, list[str]],
    *,
    user: User,
    collection: Collection,
    limit: int | None = None,
    ask: AskFunction | None = None,
    progress: Callable[[int], None] | None = None,
) -> AnswerScores:
    """Ask every question that has gold answers (the first ``limit``, in file order) and score the answers."""
    by_key = document_ids_by_key(user, collection)
    actor = Actor(user=user)

    def ask_cairn(question: str) -> AskResult:
        return answer_question(
            user=user, actor=actor, question=question, collection_ids=[collection.pk]
        )

    ask = ask or ask_cairn
    asked = [q for q in dataset.queries if q in answers][: limit or None]
    if not asked:
        raise DatasetError("no question of the set has gold answers in answers.jsonl")
    scores = AnswerScores()
    for index, query_id in enumerate(asked, 1):
        question = dataset.queries[query_id]
        started = time.perf_counter()
        result = ask(question)
        relevant = {
            by_key[d] for d, r in dataset.qrels.get(query_id, {}).items() if r > 0 and d in by_key
        }
        scores.questions.append(
            score_answer(
                query_id=query_id,
                question=question,
                answer=result.answer.answer,
                cited=result.cited,
                gold=answers[query_id],
                relevant_documents=relevant,
                fallback=result.answer.fallback,
                seconds=time.perf_counter() - started,
            )
        )
        if progress is not None:
            progress(index)
    return scores
