"""kb.followup.standalone_question: the question retrieval sees, from a whole conversation."""

from __future__ import annotations

import pytest

from kb.followup import MAX_CHARS, leans_on_context, standalone_question


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def test_a_single_question_is_returned_as_it_is_with_whitespace_tidied():
    assert standalone_question([user("  How many holiday   days do employees get? ")]) == \
        "How many holiday days do employees get?"


def test_a_follow_up_with_a_pronoun_gets_the_earlier_question_as_context():
    messages = [
        {"role": "system", "content": "You are helpful."},
        user("How many holiday days do employees get?"),
        assistant("Employees get 30 days [1]."),
        user("Can they carry them over to next year?"),
    ]
    question = standalone_question(messages)
    assert question.startswith("Can they carry them over to next year?")
    assert "How many holiday days do employees get?" in question
    assert "30 days" not in question and "[1]" not in question  # assistant turns are not used


@pytest.mark.parametrize("follow_up", ["And for part-time staff?", "What about contractors?", "Why?", "more details"])
def test_continuations_and_short_questions_lean_on_the_conversation(follow_up):
    question = standalone_question([user("What is the travel expense policy?"), assistant("…"), user(follow_up)])
    assert question == f"{follow_up} (context: What is the travel expense policy?)"


def test_a_new_self_contained_question_drops_the_earlier_topic():
    messages = [user("What is the travel expense policy?"), assistant("…"),
                user("How many holiday days do employees get?")]
    assert standalone_question(messages) == "How many holiday days do employees get?"


def test_a_chain_of_follow_ups_reaches_back_to_the_turn_that_set_the_topic_and_no_further():
    messages = [user("Who approves purchases?"), user("What is the parental leave policy?"),
                user("Is it paid?"), user("And how long does it last?")]
    assert standalone_question(messages) == (
        "And how long does it last? (context: What is the parental leave policy? / Is it paid?)")


def test_openai_content_parts_are_read_and_non_text_parts_ignored():
    messages = [user([{"type": "text", "text": "What is the parental leave policy?"}]),
                user([{"type": "image_url", "image_url": {"url": "data:,"}}, {"type": "text", "text": "Is it paid?"}])]
    assert standalone_question(messages) == "Is it paid? (context: What is the parental leave policy?)"


def test_chinese_follow_ups_are_recognised():
    assert leans_on_context("那兼职员工呢？")
    assert leans_on_context("它多少钱")
    assert not leans_on_context("员工每年有多少天带薪年假？")


def test_the_result_is_deterministic_and_bounded():
    long_context = "What does the handbook say about " + "very " * 2000 + "long questions?"
    messages = [user(long_context), user("And it?")]
    first = standalone_question(messages)
    assert first == standalone_question(messages) and len(first) <= MAX_CHARS and first.startswith("And it?")


def test_a_conversation_without_a_user_message_is_refused():
    with pytest.raises(ValueError):
        standalone_question([{"role": "system", "content": "hi"}, assistant("hello"), user("   ")])
