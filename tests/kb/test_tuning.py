"""Per-collection fusion tuning (``cairn_tune``, kb/tuning.py) and search using the stored choice."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from access.services import Actor, personal_user
from kb.golden import golden_question_create
from kb.models import Collection, Document
from kb.tuning import MIN_GOLDEN_QUESTIONS
from tests.kb.conftest import upload

pytestmark = pytest.mark.django_db(transaction=True)

NAMES = ["Abel", "Brunhilde", "Casimir", "Dagmar", "Eustace", "Fenella", "Gervase", "Hortensia", "Ignatius",
         "Jocasta", "Kilian", "Leontyne", "Mordecai", "Nerissa", "Osric", "Perpetua", "Quentin", "Rosalind",
         "Sylvester", "Theodora", "Ulysses", "Valentina"]
CITIES = ["Tromsø", "Valparaíso", "Ouagadougou", "Reykjavík", "Ulaanbaatar", "Hobart", "Timbuktu", "Ushuaia",
          "Kathmandu", "Zanzibar", "Nuuk", "Samarkand", "Cusco", "Lhasa", "Windhoek", "Yakutsk", "Darwin",
          "Fairbanks", "Marrakesh", "Quito", "Tbilisi", "Bergen"]


def make_collection(api, collection_id: int, count: int) -> Collection:
    for i in range(count):
        body = (f"# {NAMES[i]}\n\n{NAMES[i]} is a lighthouse keeper who moved to {CITIES[i]} and keeps "
                f"{i + 2} cats.\n").encode()
        assert upload(api, collection_id, f"{NAMES[i].lower()}.md", body).status_code == 201
    collection = Collection.objects.get(pk=collection_id)
    user = personal_user()
    docs = {d.title.removesuffix(".md"): d.pk for d in Document.objects.unrestricted("test").filter(
        collection=collection)}
    for i in range(count):
        golden_question_create(actor=Actor(user=user), user=user, collection=collection,
                               question=f"Where did the lighthouse keeper {NAMES[i]} move to?",
                               expected_documents=[docs[NAMES[i].lower()]])
    return collection


def test_cairn_tune_refuses_a_golden_set_that_is_too_small_and_says_how_many_are_needed(api, collection_id):
    collection = make_collection(api, collection_id, 3)
    with pytest.raises(CommandError, match=f"at least {MIN_GOLDEN_QUESTIONS} golden questions.*has 3"):
        call_command("cairn_tune", collection.name)


def test_cairn_tune_prints_the_table_and_applies_its_choice(api, collection_id):
    collection = make_collection(api, collection_id, MIN_GOLDEN_QUESTIONS)
    out = StringIO()

    call_command("cairn_tune", str(collection.pk), "--apply", stdout=out)

    text = out.getvalue()
    assert f"{MIN_GOLDEN_QUESTIONS} golden questions" in text
    assert "convex minmax w=0.5" in text and "(default)" in text and "<- chosen" in text
    assert "held-out nDCG@10: tuned" in text and "applied:" in text
    collection.refresh_from_db()
    stored = collection.fusion
    # Either the default stays (stored as nothing) or the stored choice names a method and weight.
    assert stored == {} or (stored["method"] in ("rrf", "convex") and 0 <= stored["weight"] <= 1
                            and stored["questions"] == MIN_GOLDEN_QUESTIONS)


def test_search_in_a_collection_uses_its_stored_fusion(api, collection_id):
    make_collection(api, collection_id, 3)
    query = {"q": "Where did the lighthouse keeper Casimir move to?", "collection": collection_id}
    convex = api.get("/api/v1/search", query).json()["results"]
    assert convex[0]["title"] == "casimir.md" and convex[0]["score"] == pytest.approx(1.0)  # top of both legs

    Collection.objects.filter(pk=collection_id).update(fusion={"method": "rrf", "weight": 0.5, "rrf_k": 60})
    rrf = api.get("/api/v1/search", query).json()["results"]

    assert rrf[0]["title"] == "casimir.md" and rrf[0]["score"] == pytest.approx(2 / 61, abs=1e-6)
