"""The extractive backend quotes, labels and cites; it never generates."""

from __future__ import annotations

import re

from inference.api import generate, load_generator
from inference.backends.extractive import (
    LABEL,
    MAX_ANSWER_CHARS,
    NO_PASSAGES_MESSAGE,
    split_sentences,
)
from inference.types import GenerationRequest, Passage

QUOTE = re.compile(r"“(.+?)” \[(\d+)\]")


def passage(number: int, text: str, title: str = "Doc") -> Passage:
    return Passage(
        number=number,
        chunk_id=number,
        document_id=number,
        title=title,
        page=None,
        heading="",
        text=text,
    )


def squash(text: str) -> str:
    return " ".join(text.split())


def quotes(answer_text: str) -> list[tuple[str, int]]:
    return [(m.group(1), int(m.group(2))) for m in QUOTE.finditer(answer_text)]


def test_quotes_relevant_sentences_verbatim_with_markers() -> None:
    passages = (
        passage(
            1, "The office opens at nine. Parking is free for staff.\nVisitors sign in at the desk."
        ),
        passage(
            2, "Employees get twenty holiday days a year. Unused holiday days expire in March."
        ),
        passage(3, "Remote work is allowed two days a week. Holiday requests go to the manager."),
    )
    request = GenerationRequest(
        question="How many holiday days do employees get?", passages=passages
    )
    answer = generate(load_generator("extractive"), request)

    assert answer.backend == "extractive" and answer.generated is False
    assert answer.answer.startswith(LABEL)
    found = quotes(answer.answer)
    assert found, answer.answer
    by_number = {p.number: p for p in passages}
    for text, number in found:
        assert squash(text) in squash(by_number[number].text)
    # The sentence sharing the rarest question terms comes first.
    assert found[0] == ("Employees get twenty holiday days a year.", 2)
    assert "Parking" not in answer.answer
    assert answer.cited_numbers and set(answer.cited_numbers) <= {1, 2, 3}
    assert answer.cited_numbers[0] == 2
    assert answer.reasoning == "" and answer.passages_used == 3


def test_is_deterministic() -> None:
    passages = tuple(
        passage(i, f"Alpha beta gamma number {i}. Delta epsilon {i}.") for i in range(1, 6)
    )
    request = GenerationRequest(question="alpha delta", passages=passages)
    first = generate(load_generator("extractive"), request)
    assert all(generate(load_generator("extractive"), request) == first for _ in range(3))


def test_no_passages() -> None:
    answer = generate(
        load_generator("extractive"), GenerationRequest(question="Anything?", passages=())
    )
    assert answer.answer == NO_PASSAGES_MESSAGE
    assert answer.cited_numbers == () and answer.generated is False


def test_without_shared_terms_quotes_the_best_passages_openings() -> None:
    passages = (
        passage(1, "Opening sentence one. More text here."),
        passage(2, "Second opening line. And more."),
    )
    answer = generate(
        load_generator("extractive"), GenerationRequest(question="zzz qqq", passages=passages)
    )
    assert quotes(answer.answer) == [("Opening sentence one.", 1), ("Second opening line.", 2)]


def test_long_sentence_is_cut_at_a_word_and_marked() -> None:
    long_text = " ".join(f"word{i}" for i in range(200)) + " holiday."
    answer = generate(
        load_generator("extractive"),
        GenerationRequest(question="word5", passages=(passage(1, long_text),)),
    )
    ((text, number),) = quotes(answer.answer)
    assert text.endswith("…") and len(text) <= 401 and number == 1
    assert long_text.startswith(text[:-1])


def test_line_wraps_inside_a_sentence_are_joined() -> None:
    text = "The backup runs\nevery night at two. Nothing else."
    answer = generate(
        load_generator("extractive"),
        GenerationRequest(question="backup night", passages=(passage(1, text),)),
    )
    assert quotes(answer.answer)[0] == ("The backup runs every night at two.", 1)


def test_sentence_split_keeps_verbatim_slices() -> None:
    text = "First one here. Second (with a quote).” Third!\n\n- bullet item one\n- bullet item two\n终于。完成了！"
    sentences = split_sentences(text)
    assert all(s in text for s in sentences)
    assert "First one here." in sentences and "- bullet item one" in sentences


def test_streams_answer_events_only() -> None:
    request = GenerationRequest(
        question="holiday", passages=(passage(1, "Holiday is twenty days. Yes indeed."),)
    )
    events = list(load_generator("extractive").stream(request))
    assert events and all(e.channel == "answer" and e.text for e in events)
    assert events[0].text == LABEL


def extract(question: str, *passages: Passage) -> list[tuple[str, int]]:
    return quotes(generate(load_generator("extractive"), GenerationRequest(question=question, passages=passages)).answer)


def test_a_sentence_repeated_in_overlapping_chunks_is_quoted_once() -> None:
    shared = "Employees get twenty holiday days a year."
    found = extract(
        "How many holiday days do employees get a year?",
        passage(1, f"Leave rules changed in 2020. {shared} Requests go to the manager."),
        passage(2, f"{shared} Unused holiday days expire in March."),
        passage(3, f"  {shared.upper().lower().capitalize()}  "),
    )
    texts = [squash(t).lower() for t, _ in found]
    assert texts.count(shared.lower()) == 1 and len(texts) == len(set(texts)), found


def test_a_heading_is_never_glued_into_the_next_sentence() -> None:
    text = "# Annual leave\nEmployees get twenty holiday days a year.\n\nParental leave\nParents get ten extra days."
    found = extract("How many holiday days of annual leave do employees get?", passage(1, text))
    assert found[0] == ("Employees get twenty holiday days a year.", 1)
    assert all("Annual leave" not in t and "Parental leave Parents" not in t for t, _ in found), found
    assert "Parents get ten extra days." in split_sentences(text)
    assert not any(s.startswith(("#", "Parental leave")) for s in split_sentences(text))


def test_sentences_are_chosen_by_relevance_not_passage_order() -> None:
    found = extract(
        "When does the turbine hall maintenance window open?",
        passage(1, "The turbine hall is next to the boiler room. Visitors wear badges."),
        passage(2, "Lunch is served at noon."),
        passage(3, "The turbine hall maintenance window opens at six on the first Sunday."),
    )
    assert found[0] == ("The turbine hall maintenance window opens at six on the first Sunday.", 3)


def test_chinese_text_is_split_at_chinese_sentence_ends() -> None:
    text = "员工每年有二十天年假。未使用的年假在三月失效！加班需要经理批准？"
    assert split_sentences(text) == ["员工每年有二十天年假。", "未使用的年假在三月失效！", "加班需要经理批准？"]
    found = extract("员工每年有多少天年假？", passage(1, text))
    assert found[0] == ("员工每年有二十天年假。", 1)


def test_the_answer_length_is_bounded() -> None:
    sentence = "The holiday rule {i} says employees get holiday days " + "and more words " * 20 + "here."
    passages = tuple(passage(i, " ".join(sentence.format(i=i * 10 + j) for j in range(5))) for i in range(1, 7))
    answer = generate(
        load_generator("extractive"),
        GenerationRequest(question="How many holiday days do employees get?", passages=passages),
    )
    found = quotes(answer.answer)
    assert 1 <= len(found) <= 3
    assert sum(len(t) for t, _ in found) <= MAX_ANSWER_CHARS
    assert len(answer.answer) <= len(LABEL) + MAX_ANSWER_CHARS + 3 * len("\n\n“” [1]")


def test_a_heading_paragraph_is_not_quoted_and_does_not_hide_its_section() -> None:
    # Chunks of a Markdown document start with their heading as a paragraph of its own.
    text = "Turbine hall\n\nThe turbine hall maintenance window opens at six on the first Sunday."
    found = extract("when does the turbine hall maintenance window open", passage(1, text))
    assert found == [("The turbine hall maintenance window opens at six on the first Sunday.", 1)]


def test_a_follow_ups_own_words_outweigh_its_context_and_inflections_match() -> None:
    """"Can they carry them over?" (rewritten with the earlier question as context) quotes the sentence
    about carrying days over ("carried"), not only the one that answered the earlier question."""
    holidays = passage(1, "Employees get 30 days of paid holiday per year. Unused holiday days can be carried "
                          "over until the end of March of the following year, after which they lapse.")
    question = "Can they carry them over? (context: How many days of paid holiday do employees get?)"
    answer = generate(load_generator("extractive"), GenerationRequest(question=question, passages=(holidays,)))
    said = [text for text, _ in quotes(answer.answer)]
    assert any("carried over" in text for text in said), answer.answer


def test_choosing_quotes_tokenizes_each_sentence_a_bounded_number_of_times(monkeypatch) -> None:
    """Leaving out repeated sentences compares every candidate with those kept: the comparison must reuse
    each sentence's words, not tokenize both sentences again for every pair (quadratic: 120 ms of an
    inference worker's CPU for an ask over eight passages, where 8 ms do)."""
    from inference.backends import extractive

    calls = 0
    original = extractive._terms

    def counting(text: str) -> set[str]:
        nonlocal calls
        calls += 1
        return original(text)

    monkeypatch.setattr(extractive, "_terms", counting)
    sentences = [f"Finding {i} of the trial concerns measurement {i * 7} in cohort {i % 5}." for i in range(80)]
    passages = tuple(passage(n + 1, " ".join(sentences[n * 10:(n + 1) * 10])) for n in range(8))
    chosen = extractive.ExtractiveGenerator().select(
        GenerationRequest(question="Which finding concerns measurement 21?", passages=passages))
    assert chosen and "measurement 21" in chosen[0].text
    assert calls <= 4 * len(sentences), calls  # linear in the sentences, not in their pairs (80 × 80)
