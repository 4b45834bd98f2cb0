"""The ABAC policy language: parsing, errors that point at the problem, and Q == predicate."""

from __future__ import annotations

import os

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from access.models import User
from access.policy import LEVELS, Policy, PolicyError, parse
from kb.models import Collection, Document

MAX_EXAMPLES = int(os.environ.get("CAIRN_HYPOTHESIS_EXAMPLES", "300"))

# --- parsing and evaluation -------------------------------------------------------------

EXAMPLE = "user.department == doc.department and user.clearance >= doc.sensitivity"
EXAMPLE_2 = 'doc.sensitivity <= "internal" or user.department in doc.departments'


@pytest.mark.parametrize(
    "user, doc, allowed",
    [
        ({"department": "eng", "clearance": "secret"}, {"department": "eng", "sensitivity": "confidential"}, True),
        ({"department": "eng", "clearance": "internal"}, {"department": "eng", "sensitivity": "confidential"}, False),
        ({"department": "ops", "clearance": "secret"}, {"department": "eng", "sensitivity": "public"}, False),
        ({"department": "eng"}, {"department": "eng", "sensitivity": "public"}, False),  # no clearance: deny
        ({"department": "eng", "clearance": "secret"}, {"department": "eng"}, False),  # unlabelled doc: deny
    ],
)
def test_the_issue_example_policy(user, doc, allowed):
    assert Policy.parse(EXAMPLE).allows(user, doc) is allowed


def test_levels_order_public_internal_confidential_secret():
    policy = Policy.parse(EXAMPLE_2)
    assert [policy.allows({}, {"sensitivity": level}) for level in LEVELS] == [True, True, False, False]
    assert policy.allows({"department": "hr"}, {"sensitivity": "secret", "departments": ["hr", "eng"]})
    assert not policy.allows({"department": "ops"}, {"sensitivity": "secret", "departments": ["hr", "eng"]})


@pytest.mark.parametrize(
    "source, user, doc, allowed",
    [
        ('doc.region != "eu"', {}, {}, False),               # a missing attribute is never "unequal"
        ('not doc.region == "eu"', {}, {}, True),            # …but negating a false comparison is true
        ("doc.level > 2", {}, {"level": 3}, True),
        ("doc.level > 2", {}, {"level": "3"}, False),         # strings are not numbers
        ("doc.flag == 1", {}, {"flag": True}, False),         # booleans are not numbers
        ("doc.level in [1, 2.5]", {}, {"level": 2.5}, True),
        ('"x" in doc.tags', {}, {"tags": "x"}, False),        # a string is not a list
        ("user.level >= 3 and doc.public == 1", {"level": 3}, {"public": 1}, True),
        ("(doc.a == 'x' or doc.b == 'y') and not doc.c == 'z'", {}, {"b": "y", "c": "q"}, True),
    ],
)
def test_semantics_deny_by_default(source, user, doc, allowed):
    assert Policy.parse(source).allows(user, doc) is allowed


@pytest.mark.parametrize(
    "source, position, words",
    [
        ("user.department = doc.department", 16, "'=='"),
        ("doc.a == doc.b", 6, "two document attributes"),
        ('user.clearance >= "top"', 18, "not a sensitivity level"),
        ("(doc.a == 1", 11, "expected ')'"),
        ("doc.a == 1 and", 14, "expected a value"),
        ("foo.bar == 1", 0, "unknown name"),
        ('doc.a == "unterminated', 9, "unterminated"),
        ('doc.a in "x"', 9, "needs a list"),
        ("doc.a == 1 doc.b == 2", 11, "expected 'and', 'or'"),
        ("doc.a == 1; drop table", 10, "unexpected character"),
        ("__import__('os').system('x')", 0, "unknown name"),
        ("", 0, "empty"),
    ],
)
def test_invalid_policies_are_rejected_with_the_position_of_the_error(source, position, words):
    with pytest.raises(PolicyError) as info:
        parse(source)
    assert info.value.position == position
    assert words in str(info.value)
    assert f"at character {position + 1}" in str(info.value)


def test_deep_nesting_is_refused_not_a_crash():
    with pytest.raises(PolicyError, match="nested too deeply"):
        parse("(" * 500 + "doc.a == 1" + ")" * 500)
    with pytest.raises(PolicyError, match="nested too deeply"):
        parse("not " * 500 + "doc.a == 1")


# --- Q == predicate, over generated policies and attributes ----------------------------

NAMES = ["department", "sensitivity", "clearance", "level", "tags", "region"]
STRINGS = ["eng", "ops", "", "é", *LEVELS]
NUMBERS = [-2, 0, 1, 2, 3, 0.5, 2.0, 2.5]

scalar_value = st.one_of(st.sampled_from(STRINGS), st.sampled_from(NUMBERS))
stored_value = st.one_of(
    scalar_value,
    st.lists(scalar_value, max_size=3),
    st.sampled_from([True, False, None, {"k": "eng"}]),
)
attributes = st.dictionaries(st.sampled_from(NAMES), stored_value, max_size=5)


def _literal(value) -> str:
    if isinstance(value, str):
        return '"' + value + '"'
    return repr(value)


@st.composite
def operand(draw, side: str | None = None) -> str:
    kind = side or draw(st.sampled_from(["doc", "user", "lit"]))
    if kind in ("doc", "user"):
        return f"{kind}.{draw(st.sampled_from(NAMES))}"
    return _literal(draw(scalar_value))


@st.composite
def comparison(draw) -> str:
    op = draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in"]))
    doc_first = draw(st.booleans())
    doc = draw(operand("doc"))
    if op == "in":
        if doc_first:
            right = draw(st.one_of(operand("user"),
                                   st.lists(scalar_value, max_size=4).map(lambda v: "[" + ", ".join(map(_literal, v)) + "]")))
            return f"{doc} in {right}"
        return f"{draw(st.one_of(operand('user'), operand('lit')))} in {doc}"
    other = draw(st.one_of(operand("user"), operand("lit")))
    return f"{doc} {op} {other}" if doc_first else f"{other} {op} {doc}"


def policies(max_leaves: int = 6):
    return st.recursive(
        comparison(),
        lambda inner: st.one_of(
            st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
            inner.map(lambda p: f"not {p}"),
        ),
        max_leaves=max_leaves,
    )


def valid_policy(source: str) -> Policy | None:
    try:
        return Policy.parse(source)
    except PolicyError:
        return None  # e.g. an ordered comparison of a level attribute with a non-level literal


@pytest.mark.django_db
def test_policy_q_and_predicate_agree_on_generated_cases():
    owner = User.objects.create(username="owner")
    collection = Collection.objects.create(name="c", owner=owner)
    seen = {"valid": 0, "some_allowed": 0, "some_denied": 0}

    @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(source=policies(), user_attrs=attributes, docs=st.lists(attributes, min_size=1, max_size=8))
    def check(source, user_attrs, docs):
        policy = valid_policy(source)
        if policy is None:
            return
        seen["valid"] += 1
        with transaction.atomic():
            created = Document.objects.bulk_create(
                [Document(collection=collection, title=f"d{i}", created_by=owner, attributes=a)
                 for i, a in enumerate(docs)]
            )
            ids = [d.pk for d in created]
            compiled = policy.q(user_attrs)
            scope = Document.objects.unrestricted("test").filter(pk__in=ids)
            if compiled is True:
                by_query = set(ids)
            elif compiled is False:
                by_query = set()
            else:
                by_query = set(scope.filter(compiled).values_list("pk", flat=True))
            by_predicate = {d.pk for d in created if policy.allows(user_attrs, d.attributes)}
            assert by_query == by_predicate, (source, user_attrs, [d.attributes for d in created])
            seen["some_allowed"] += bool(by_predicate)
            seen["some_denied"] += len(by_predicate) < len(ids)
            transaction.set_rollback(True)

    check()
    # The strategy must exercise both outcomes, not pass vacuously.
    assert seen["valid"] >= MAX_EXAMPLES // 2, seen
    assert seen["some_allowed"] >= MAX_EXAMPLES // 10 and seen["some_denied"] >= MAX_EXAMPLES // 10, seen


@settings(max_examples=MAX_EXAMPLES, deadline=None)
@given(source=st.one_of(st.text(max_size=80),
                        st.lists(st.sampled_from(["user.a", "doc.b", "==", "<=", "in", "and", "or", "not", "(",
                                                  ")", "[", "]", ",", '"x"', "'y'", "1", "-2.5", ".", "=", "\\"]),
                                 max_size=12).map(" ".join)))
def test_any_text_either_parses_or_is_a_policy_error_with_a_position(source):
    try:
        parse(source)
    except PolicyError as error:
        assert 0 <= error.position <= len(source)
