"""Answer orchestration: permission-scoped retrieval → numbered passages → generator.

Generation runs where the shape puts it: in this process (personal) or on
the ``inference`` Celery pool (team), where the model stays resident on the
GPU workers — the web process never loads a language model in the team shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings

from access.models import User
from access.services import Actor, audit_record
from inference.types import Answer, GenerationRequest, Passage
from kb.selectors import SearchResult, chunk_search


@dataclass(frozen=True)
class AskResult:
    answer: Answer
    passages: tuple[Passage, ...]
    cited: tuple[Passage, ...]


def passages_from(results: Sequence[SearchResult]) -> tuple[Passage, ...]:
    return tuple(
        Passage(
            number=i + 1, chunk_id=r.chunk_id, document_id=r.document_id, title=r.title,
            page=r.page, heading=r.heading, text=r.text,
        )
        for i, r in enumerate(results)
    )


def generate(request: GenerationRequest) -> Answer:
    if settings.CAIRN_TASKS == "celery":
        from config.celery import app
        from inference.tasks import TASK_GENERATE
        from inference.wire import answer_from_dict, request_to_dict

        result = app.send_task(TASK_GENERATE, args=[request_to_dict(request)])
        return answer_from_dict(result.get(timeout=settings.CAIRN_ASK_TIMEOUT))
    from inference.api import generate as generate_local
    from inference.api import load_generator

    return generate_local(load_generator(settings.CAIRN_GENERATOR, settings.CAIRN_LLM_PATH), request)


def answer_question(
    *, user: User, actor: Actor, question: str, collection_ids: Sequence[int] | None = None
) -> AskResult:
    results = chunk_search(user, question, collection_ids=collection_ids, k=settings.CAIRN_ASK_PASSAGES)
    passages = passages_from(results)
    request = GenerationRequest(
        question=question, passages=passages, max_new_tokens=settings.CAIRN_MAX_NEW_TOKENS,
        request_id=actor.request_id,
    )
    answer = generate(request)
    by_number = {p.number: p for p in passages}
    cited = tuple(by_number[n] for n in answer.cited_numbers if n in by_number)
    audit_record(
        actor=actor, action="kb.ask", target_type="collection",
        target_id=",".join(str(c) for c in collection_ids) if collection_ids else "*",
        detail={
            "question_chars": len(question),
            "chunks_served": [p.chunk_id for p in passages],
            "chunks_cited": [p.chunk_id for p in cited],
            "backend": answer.backend,
        },
    )
    return AskResult(answer=answer, passages=passages, cited=cited)


def search(
    *, user: User, actor: Actor, query: str, collection_ids: Sequence[int] | None = None, k: int = 10,
    mode: str = "hybrid", rerank: bool = True,
) -> list[SearchResult]:
    """A permission-scoped search, recorded in the audit log with the chunk ids served."""
    results = chunk_search(user, query, collection_ids=collection_ids, k=k, mode=mode, rerank=rerank)
    audit_record(
        actor=actor, action="kb.search", target_type="collection",
        target_id=",".join(str(c) for c in collection_ids) if collection_ids else "*",
        detail={"query_chars": len(query), "k": k, "mode": mode, "chunks_served": [r.chunk_id for r in results],
                "reranked": any(r.rerank_score is not None for r in results)},
    )
    return results
