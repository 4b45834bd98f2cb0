"""Citations attributed after the fact to an answer written without markers (the plain prompt's)."""

from __future__ import annotations

from inference.attribution import supporting_passage, with_attributed_citation
from inference.types import GenerationRequest, Passage


def passage(number: int, text: str) -> Passage:
    return Passage(number=number, chunk_id=number, document_id=number, title="", page=None, heading="", text=text)


REQUEST = GenerationRequest(
    question="Who was the count of Apulia?",
    passages=(
        passage(1, "The count of Apulia ruled the south. Apulia was a county of the Normans."),
        passage(2, "In 1057 Robert Guiscard became count of Apulia after his brother Humphrey."),
        passage(3, "Bethencourt conquered the Canary Islands."),
    ),
)


def test_the_passage_with_the_answers_own_words_is_cited_not_one_with_the_questions() -> None:
    # Passage 1 repeats "count of Apulia" twice; only passage 2 names the answer.
    assert (
        with_attributed_citation(REQUEST, "The count of Apulia was Robert Guiscard.")
        == "The count of Apulia was Robert Guiscard [2]."
    )


def test_an_answer_no_passage_supports_stays_uncited() -> None:
    assert supporting_passage(REQUEST, "Nobody knows.") is None
    assert with_attributed_citation(REQUEST, "Nobody knows.") == "Nobody knows."


def test_ties_go_to_the_better_ranked_passage_and_a_cut_answer_gets_its_marker_at_the_end() -> None:
    assert with_attributed_citation(REQUEST, "It was the count of") == "It was the count of [1]"


def test_an_answer_that_already_cites_is_left_alone() -> None:
    assert with_attributed_citation(REQUEST, "Robert Guiscard [1].") == "Robert Guiscard [1]."
