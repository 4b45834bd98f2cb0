"""Per-collection fusion tuning (``cairn_tune``, kb/tuning.py) and search using the stored choice."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from rest_framework.test import APIClient

from access.models import User
from access.services import Actor, personal_user
from kb import index
from kb.golden import golden_question_create
from kb.models import Collection, Document
from kb.search import fusion_from_dict
from kb.services import collection_share
from kb.tuning import MIN_GOLDEN_QUESTIONS, fusion_mark_stale
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


# --- owners tuning from the API and the evaluation page ---------------------------------------------


def tune_url(collection_id: int, suffix: str = "") -> str:
    return f"/api/v1/collections/{collection_id}/tune{suffix}"


def test_the_api_refuses_a_small_golden_set_with_the_number_needed(api, collection_id):
    make_collection(api, collection_id, 3)

    response = api.post(tune_url(collection_id), {}, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "too_few_questions"
    assert error["details"] == {"needed": MIN_GOLDEN_QUESTIONS, "have": 3, "missing": MIN_GOLDEN_QUESTIONS - 3}
    assert f"at least {MIN_GOLDEN_QUESTIONS} golden questions" in error["message"]
    assert Collection.objects.get(pk=collection_id).fusion_tuning == {}  # nothing queued


def test_an_owner_tunes_sees_the_table_and_applies_the_choice(api, collection_id):
    make_collection(api, collection_id, MIN_GOLDEN_QUESTIONS)
    before = api.get(tune_url(collection_id)).json()
    assert before["tuning"] is None and before["stored"] is None
    assert before["in_use"] == before["default"] == "convex minmax w=0.5"
    assert before["golden_questions"] == MIN_GOLDEN_QUESTIONS

    response = api.post(tune_url(collection_id), {}, format="json")

    assert response.status_code == 202
    run = response.json()["tuning"]
    assert run["status"] == "done"  # tests run tasks inline
    result = run["result"]
    assert result["questions"] == MIN_GOLDEN_QUESTIONS and result["folds"] == 5
    rows = {row["setting"]: row for row in result["table"]}
    assert len(rows) == 23 and rows["convex minmax w=0.5"]["default"] is True
    assert rows["convex minmax w=0.5 depth=50"]["depth"] == 50 and rows["rrf k=60 w=0.5 depth=200"]["depth"] == 200
    assert rows["convex minmax w=0.5"]["margin_over_default"] == 0.0
    assert sum(row["chosen"] for row in result["table"]) == 1
    assert all(0.0 <= row["ndcg10"] <= 1.0 for row in result["table"])
    assert result["cv_margin"] == pytest.approx(result["cv_tuned_ndcg10"] - result["cv_default_ndcg10"], abs=2e-4)
    assert Collection.objects.get(pk=collection_id).fusion == {}  # not applied yet

    applied = api.post(tune_url(collection_id, "/apply"))

    assert applied.status_code == 200
    state = applied.json()
    assert state["in_use"] == result["chosen"] and state["stale"] is False
    stored = Collection.objects.get(pk=collection_id).fusion
    assert (stored == {}) == (result["chosen"] == result["default"])


def test_apply_stores_a_non_default_choice_and_search_uses_it(api, collection_id):
    collection = make_collection(api, collection_id, MIN_GOLDEN_QUESTIONS)
    assert api.post(tune_url(collection_id), {}, format="json").status_code == 202
    collection.refresh_from_db()
    # Make the finished run's choice a non-default setting, as a golden set favouring RRF would.
    state = collection.fusion_tuning
    stored = {**state["result"]["stored"], "method": "rrf", "weight": 0.7, "rrf_k": 60}
    state["result"] = {**state["result"], "chosen": "rrf k=60 w=0.7", "stored": stored}
    Collection.objects.filter(pk=collection_id).update(fusion_tuning=state)

    body = api.post(tune_url(collection_id, "/apply")).json()

    assert body["in_use"] == "rrf k=60 w=0.7" and body["stored"]["method"] == "rrf"
    hit = api.get("/api/v1/search", {"q": "Where did the lighthouse keeper Casimir move to?",
                                     "collection": collection_id}).json()["results"][0]
    assert hit["score"] == pytest.approx(2 * 0.7 / 61 + 2 * 0.3 / 61, abs=1e-6)  # first in both legs, RRF


def test_apply_without_a_finished_run_is_a_clear_400(api, collection_id):
    make_collection(api, collection_id, 3)
    response = api.post(tune_url(collection_id, "/apply"))
    assert response.status_code == 400 and "Run the tuning first" in response.json()["error"]["message"]


def test_only_owners_may_tune_everyone_else_gets_404(api, collection_id):
    collection = make_collection(api, collection_id, MIN_GOLDEN_QUESTIONS)
    owner = collection.owner
    stranger, viewer, editor = (User.objects.create_user(n) for n in ("stranger", "viewer", "editor"))
    collection_share(actor=Actor(user=owner), collection=collection, principal=viewer, role="viewer")
    collection_share(actor=Actor(user=owner), collection=collection, principal=editor, role="editor")
    for user in (stranger, viewer, editor):
        client = APIClient()
        client.force_authenticate(user)
        assert client.get(tune_url(collection_id)).status_code == 404
        assert client.post(tune_url(collection_id), {}, format="json").status_code == 404
        assert client.post(tune_url(collection_id, "/apply")).status_code == 404
        page = Client()
        page.force_login(user)
        if user is editor:  # the editor sees the evaluation page, without the tuning card, and cannot post to it
            html = page.get(f"/collections/{collection_id}/evaluation/").content.decode()
            assert "Golden questions" in html and 'id="tuning-card"' not in html
            assert page.post(f"/collections/{collection_id}/evaluation/", {"action": "tune"}).status_code == 404
    assert Collection.objects.get(pk=collection_id).fusion_tuning == {}
    assert api.get(tune_url("abc")).status_code == 404


def test_a_reindex_or_model_switch_marks_the_stored_choice_stale_and_search_falls_back(api, collection_id):
    make_collection(api, collection_id, 3)
    query = {"q": "Where did the lighthouse keeper Casimir move to?", "collection": collection_id}
    rrf = {"method": "rrf", "weight": 0.5, "rrf_k": 60, "embedding_model": index.embedding_model_id()}
    Collection.objects.filter(pk=collection_id).update(fusion=rrf)
    assert api.get("/api/v1/search", query).json()["results"][0]["score"] == pytest.approx(2 / 61, abs=1e-6)

    call_command("cairn_reindex", "--no-eval", stdout=StringIO())

    state = api.get(tune_url(collection_id)).json()
    assert state["stale"] is True and state["stale_reason"] == "reindex"
    assert state["in_use"] == state["default"] and state["stored"]["method"] == "rrf"
    assert api.get("/api/v1/search", query).json()["results"][0]["score"] == pytest.approx(1.0)  # convex again
    html = Client().get(f"/collections/{collection_id}/evaluation/").content.decode()
    assert 'data-role="fusion-stale"' in html and "re-indexed since it was tuned" in html

    # A choice tuned with another embedding model is stale as well, marked or not.
    Collection.objects.filter(pk=collection_id).update(fusion={**rrf, "embedding_model": "some-other-model"})
    state = api.get(tune_url(collection_id)).json()
    assert state["stale"] is True and state["stale_reason"] == "model_switch"
    assert api.get("/api/v1/search", query).json()["results"][0]["score"] == pytest.approx(1.0)


def test_the_evaluation_page_card_runs_the_tuning_shows_the_table_and_applies(api, collection_id):
    make_collection(api, collection_id, MIN_GOLDEN_QUESTIONS)
    page = Client()  # loopback: the personal-mode owner
    url = f"/collections/{collection_id}/evaluation/"
    html = page.get(url).content.decode()
    assert 'id="tuning-card"' in html and 'data-role="run-tuning"' in html and "tuning-table" not in html

    ran = page.post(url, {"action": "tune"}, follow=True).content.decode()

    assert "Tuning finished" in ran and 'id="tuning-table"' in ran
    assert ran.count("<tr") == 24  # the header and 23 settings
    assert 'data-chosen="true"' in ran and "Held-out nDCG@10: tuned" in ran
    applied = page.post(url, {"action": "tune_apply"}, follow=True).content.decode()
    assert "Applied: search and ask in this collection now use" in applied


def test_the_page_card_says_how_many_questions_are_missing(api, collection_id):
    make_collection(api, collection_id, 3)
    page = Client()
    url = f"/collections/{collection_id}/evaluation/"
    html = page.get(url).content.decode()
    assert f"Add {MIN_GOLDEN_QUESTIONS - 3} more golden questions to tune." in html
    refused = page.post(url, {"action": "tune"}, follow=True).content.decode()
    assert f"at least {MIN_GOLDEN_QUESTIONS} golden questions" in refused


def test_a_stored_depth_sets_both_legs_depth_and_is_named():
    config = fusion_from_dict({"method": "convex", "weight": 0.5, "norm": "minmax", "depth": 50})
    assert config is not None and (config.dense_depth, config.lexical_depth) == (50, 50)
    assert config.describe() == "convex minmax w=0.5 depth=50"
    assert fusion_from_dict({"method": "convex", "weight": 0.5}).describe() == "convex minmax w=0.5"
    assert fusion_from_dict({"method": "convex", "weight": 0.5, "depth": "deep"}) is None


def test_a_model_switch_marks_choices_and_finished_runs_stale_and_a_stale_run_cannot_be_applied(api, collection_id):
    make_collection(api, collection_id, MIN_GOLDEN_QUESTIONS)
    assert api.post(tune_url(collection_id), {}, format="json").json()["tuning"]["status"] == "done"
    rrf = {"method": "rrf", "weight": 0.5, "rrf_k": 60, "embedding_model": index.embedding_model_id()}
    Collection.objects.filter(pk=collection_id).update(fusion=rrf)

    assert fusion_mark_stale("model_switch") == 1

    state = api.get(tune_url(collection_id)).json()
    assert state["stale"] is True and state["stale_reason"] == "model_switch" and state["in_use"] == state["default"]
    assert state["tuning"]["stale"]["reason"] == "model_switch"
    refused = api.post(tune_url(collection_id, "/apply"))
    assert refused.status_code == 400 and "run the tuning again" in refused.json()["error"]["message"]
    # Re-running the tuning gives a fresh run that can be applied; applying replaces the stale choice.
    assert api.post(tune_url(collection_id), {"apply": True}, format="json").status_code == 202
    assert api.get(tune_url(collection_id)).json()["stale"] is False
