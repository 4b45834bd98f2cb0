"""`manage.py cairn_eval --answers` on a tiny QA set, and the SQuAD-style answer metrics."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from inference.backends.extractive import LABEL
from inference.types import Passage
from kb.answer_evaluation import (
    contains_answer,
    exact_match,
    f1,
    normalize,
    score_answer,
    scoring_text,
    tokens,
)
from tests.kb.test_eval import write_beir

GOLD = {"q1": ["every month"], "q2": ["at six", "six"], "q3": ["ninety days"]}


def write_qa(root, gold=GOLD):
    write_beir(root)
    (root / "answers.jsonl").write_text(
        "".join(json.dumps({"_id": q, "answers": a}) + "\n" for q, a in gold.items())
    )
    return root


def run(*args):
    out, err = io.StringIO(), io.StringIO()
    call_command("cairn_eval", *args, stdout=out, stderr=err)
    return out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_cairn_eval_answers_asks_every_question_and_prints_the_four_metrics(
    tmp_path, isolated_storage
):
    dataset = write_qa(tmp_path / "tinyqa")

    out = run(str(dataset), "--answers", "--json", str(tmp_path / "answers.json"))

    header, row = out.strip().splitlines()
    assert header.split()[:5] == ["questions", "EM", "F1", "recall", "cite-P"]
    values = row.split()
    assert values[0] == "3"
    report = json.loads((tmp_path / "answers.json").read_text())
    scores = report["scores"]
    assert report["backend"] == "extractive" and scores["questions"] == 3
    # The extractive answer quotes the one sentence that holds each gold answer, from its own document.
    assert scores["answer_recall"] == pytest.approx(1.0) and scores[
        "citation_precision"
    ] == pytest.approx(1.0)
    assert scores["em"] == pytest.approx(0.0) and 0.1 < scores["f1"] < 0.5
    assert float(values[1]) == pytest.approx(scores["em"], abs=1e-4)
    assert float(values[2]) == pytest.approx(scores["f1"], abs=1e-4)
    assert scores["bare_markers"] == 0 and scores["cited"] >= 3
    first = report["questions"][0]
    assert first["query_id"] == "q1" and "every month" in first["answer"] and first["recall"] == 1.0

    limited = run(str(dataset), "--answers", "--limit", "1")
    assert limited.strip().splitlines()[1].split()[0] == "1"


@pytest.mark.django_db(transaction=True)
def test_cairn_eval_answers_needs_gold_answers_and_a_sane_limit(tmp_path, isolated_storage):
    dataset = write_beir(tmp_path / "nogold")
    with pytest.raises(CommandError, match="answers.jsonl"):
        run(str(dataset), "--answers")
    (dataset / "answers.jsonl").write_text('{"_id": "q1", "answers": "every month"}\n')
    with pytest.raises(CommandError, match="answers.jsonl:1"):
        run(str(dataset), "--answers")
    with pytest.raises(CommandError, match="--limit"):
        run(str(dataset), "--limit", "3")


def test_em_and_f1_follow_the_squad_script() -> None:
    assert normalize("The  Eiffel Tower!") == "eiffel tower"
    assert exact_match("the Eiffel tower.", ["Eiffel Tower"]) == 1.0
    assert exact_match("Eiffel", ["Eiffel Tower"]) == 0.0
    assert f1("Eiffel", ["Eiffel Tower"]) == pytest.approx(2 / 3)
    assert f1("in Paris, France", ["Paris", "France"]) == pytest.approx(
        0.5
    )  # best over the gold answers
    assert f1("", ["x"]) == 0.0


def test_chinese_is_scored_character_by_character() -> None:
    assert tokens(normalize("员工每年有二十天年假。")) == list("员工每年有二十天年假")
    assert exact_match("二十天。", ["二十天"]) == 1.0
    assert f1("二十天年假", ["二十天"]) == pytest.approx(2 * (3 / 5) * 1 / (3 / 5 + 1))
    assert contains_answer("员工每年有二十天年假", ["二十天"])


def test_answer_recall_needs_whole_tokens_and_ignores_markers_and_labels() -> None:
    assert contains_answer("They get twenty days a year", ["twenty days"])
    assert not contains_answer("They get twentyfold days", ["twenty"])
    assert scoring_text(f"{LABEL}\n\n“Twenty days a year.” [2]") == "Twenty days a year."
    assert scoring_text("Twenty days [1, 2]【3】.") == "Twenty days ."


def test_citation_precision_counts_cited_passages_of_relevant_documents_or_with_the_answer() -> (
    None
):
    def cited(number, document_id, text):
        return Passage(
            number=number,
            chunk_id=number,
            document_id=document_id,
            title="",
            page=None,
            heading="",
            text=text,
        )

    result = score_answer(
        query_id="q",
        question="?",
        answer="Twenty days [1][2][3]",
        gold=["twenty days"],
        relevant_documents={7},
        cited=[
            cited(1, 7, "unrelated words"),
            cited(2, 8, "Staff get twenty days."),
            cited(3, 9, "Lunch at noon."),
        ],
    )
    assert (result.cited, result.cited_relevant) == (3, 2)
    assert result.em == 1.0 and result.recall == 1.0 and not result.bare_marker
