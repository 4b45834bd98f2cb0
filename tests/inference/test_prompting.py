"""Prompts: numbered passages, fixed instruction prefix."""

from __future__ import annotations

from dataclasses import replace

from inference.prompting import INSTRUCTIONS, build_messages, build_plain_prompt, passage_header
from inference.types import GenerationRequest, Passage


def test_every_passage_appears_numbered_with_its_source(
    request_two_passages: GenerationRequest,
) -> None:
    system, user = build_messages(request_two_passages)
    assert system == {"role": "system", "content": INSTRUCTIONS}
    assert user["role"] == "user"
    content = user["content"]
    assert (
        "[1] (Staff handbook.pdf, p. 3 › Leave)\nEmployees get twenty holiday days a year."
        in content
    )
    assert "[2] (Remote work policy)\nRemote work is allowed two days a week." in content
    assert (
        content.index("[1]") < content.index("[2]") < content.index(request_two_passages.question)
    )
    assert content.rstrip().endswith(request_two_passages.question)


def test_header_parts_are_optional() -> None:
    base = Passage(
        number=4, chunk_id=1, document_id=1, title="Notes", page=None, heading="", text="x"
    )
    assert passage_header(base) == "[4] (Notes)"
    assert passage_header(replace(base, page=7)) == "[4] (Notes, p. 7)"
    assert passage_header(replace(base, heading="Intro")) == "[4] (Notes › Intro)"


def test_instructions_cover_citing_not_knowing_and_language() -> None:
    text = INSTRUCTIONS.lower()
    assert "[1]" in text and "don't know" in text and "language of the question" in text
    assert "only" in text  # only from the passages


def test_instruction_prefix_is_identical_across_requests(
    request_two_passages: GenerationRequest,
) -> None:
    other = GenerationRequest(
        question="Wer genehmigt Urlaub?", passages=request_two_passages.passages[1:]
    )
    for system_in_user in (False, True):
        a = build_messages(request_two_passages, system_in_user=system_in_user)
        b = build_messages(other, system_in_user=system_in_user)
        assert a[0]["content"].startswith(INSTRUCTIONS) and b[0]["content"].startswith(INSTRUCTIONS)
        assert a[0]["content"] != b[0]["content"] if system_in_user else a[0] == b[0]


def test_system_in_user_makes_a_single_user_turn(request_two_passages: GenerationRequest) -> None:
    messages = build_messages(request_two_passages, system_in_user=True)
    assert [m["role"] for m in messages] == ["user"]
    assert "[2] (Remote work policy)" in messages[0]["content"]


def test_no_passages_says_so() -> None:
    content = build_messages(GenerationRequest(question="Anything?", passages=()))[1]["content"]
    assert "No passages" in content and content.endswith("Anything?")


def test_plain_prompt_is_a_transcript(request_two_passages: GenerationRequest) -> None:
    prompt = build_plain_prompt(request_two_passages)
    assert prompt.startswith(f"System: {INSTRUCTIONS}\n\nUser: ")
    assert prompt.endswith("Assistant:")
    assert "[1] (Staff handbook.pdf, p. 3 › Leave)" in prompt


def test_the_instructions_show_the_answer_format_with_a_worked_example() -> None:
    from inference.citations import is_bare_marker

    example = INSTRUCTIONS.split("Example:\n", 1)[1]
    answer_line = example.strip().splitlines()[-1]
    assert answer_line.startswith("Answer: ") and "[1]" in answer_line
    # The example's answer is words first, then the marker: never a bare marker.
    assert not is_bare_marker(answer_line.removeprefix("Answer: "))
    assert "A citation alone is not an answer" in INSTRUCTIONS


def test_small_models_get_their_three_best_passages_and_large_ones_all_that_fit() -> None:
    from inference.prompting import pack_passages, passages_for_model

    assert passages_for_model(parameters=494_000_000, window=32_768) == 3
    assert passages_for_model(parameters=135_000_000, window=8192) == 3
    assert passages_for_model(parameters=7_000_000_000, window=2048) == 3  # a short window
    assert passages_for_model(parameters=7_000_000_000, window=32_768) is None
    assert passages_for_model(parameters=494_000_000, window=32_768, configured=6) == 6

    passages = tuple(Passage(number=i, chunk_id=i, document_id=i, title="t", page=None, heading="", text="x")
                     for i in range(1, 7))
    request = GenerationRequest(question="q", passages=passages)
    packed = pack_passages(request, prompt_tokens=lambda r: 10, window=10_000, max_passages=3)
    assert [p.number for p in packed.passages] == [1, 2, 3]
    assert pack_passages(request, prompt_tokens=lambda r: 10, window=10_000).passages == passages


def test_the_plain_prompt_is_the_context_and_the_question_in_one_user_turn(
    request_two_passages: GenerationRequest,
) -> None:
    from inference.prompting import PLAIN_PROMPT

    plain = replace(request_two_passages, prompt="plain")
    context = "\n\n".join(p.text for p in plain.passages)
    expected = PLAIN_PROMPT.format(context=context, question=plain.question)

    assert build_messages(plain, system_in_user=False) == [{"role": "user", "content": expected}]
    assert build_plain_prompt(plain) == expected
    assert "[1]" not in expected and INSTRUCTIONS not in expected


def test_small_models_answer_the_plain_prompt_unless_configured() -> None:
    from inference.prompting import prompt_for_model

    assert prompt_for_model(parameters=494_000_000) == "plain"
    assert prompt_for_model(parameters=7_000_000_000) == "cited"
    assert prompt_for_model(parameters=None) == "cited"
    assert prompt_for_model(parameters=494_000_000, configured="cited") == "cited"
    assert prompt_for_model(parameters=7_000_000_000, configured="plain") == "plain"
