"""The golden-set page of a collection: its questions, and the metrics of every evaluation run.

Server-rendered with plain forms (post, then redirect), so it works without
JavaScript.  Editors and owners of the collection and platform admins only;
anyone else gets the ordinary 404 page.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.formats import number_format
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from access.services import actor_from_request, signed_in_user
from ingestion.api import enqueue_tune
from kb import golden, selectors, tuning
from kb.exceptions import InvalidInput, NotFound
from kb.models import Collection
from kb.search import fusion_from_dict


@login_required
def collection_evaluation(request: HttpRequest, collection_id: int) -> HttpResponse:
    try:
        collection = selectors.evaluable_collection_get(request.user, collection_id)
    except NotFound:
        raise Http404("No such collection") from None
    if request.method == "POST":
        actor = actor_from_request(request)
        action = request.POST.get("action", "")
        try:
            if action == "add":
                ids = []
                for value in request.POST.getlist("expected_documents"):
                    if not value.isdigit():
                        raise InvalidInput(_("Choose expected documents from the list."))
                    ids.append(int(value))
                golden.golden_question_create(actor=actor, user=signed_in_user(request), collection=collection,
                                              question=request.POST.get("question", ""), expected_documents=ids)
                messages.success(request, _("Question added to the golden set."))
            elif action == "delete":
                golden.golden_question_delete(actor=actor, collection=collection,
                                              question_id=request.POST.get("question_id", ""))
                messages.success(request, _("Question removed."))
            elif action == "run":
                run = golden.golden_evaluate(collection=collection, actor=actor)
                if run is None:
                    raise InvalidInput(_("Add golden questions before running an evaluation."))
                messages.success(request, ngettext("Evaluated %(count)s question: nDCG@10 %(ndcg)s.", "Evaluated %(count)s questions: nDCG@10 %(ndcg)s.", run.questions) % {"count": run.questions, "ndcg": number_format(run.ndcg10, 3)})
            elif action in ("tune", "tune_apply"):
                _tuning_action(request, collection, action)
            else:
                raise InvalidInput(_("Unknown action."))
        except (InvalidInput, NotFound) as exc:
            messages.error(request, str(exc) if isinstance(exc, InvalidInput) else "No such question.")
        return redirect("collection-evaluation", collection_id=collection.pk)
    documents = golden.golden_documents(signed_in_user(request), collection).order_by("title", "id")
    titles = dict(documents.values_list("id", "title"))
    questions = [
        (q, [(d.pk, titles.get(d.pk, f"document {d.pk} (gone)")) for d in golden.expected_of(q)])
        for q in golden.golden_questions(collection)
    ]
    runs = [(run, "—" if previous is None else f"{run.ndcg10 - previous.ndcg10:+.3f}")
            for run, previous in golden.runs_with_previous(collection)]
    latest = runs[0][0] if runs else None
    latest_details = [
        (item, [(titles.get(int(doc), f"document {doc}"), rank) for doc, rank in item.get("ranks", {}).items()])
        for item in (latest.details if latest is not None else [])
    ]
    return render(request, "kb/evaluation.html", {
        "collection": collection, "documents": documents, "questions": questions, "runs": runs,
        "latest": latest, "latest_details": latest_details, **_tuning_context(request, collection),
    })


def _tuning_action(request: HttpRequest, collection: Collection, action: str) -> None:
    """The fusion-tuning card's two buttons; owners only (anyone else: "No such collection")."""
    try:
        owned = selectors.owned_collection_get(request.user, collection.pk)
    except NotFound:
        raise Http404("No such collection") from None
    actor = actor_from_request(request)
    if action == "tune":
        tuning.tuning_request(actor=actor, collection=owned)
        enqueue_tune(owned.pk)
        owned.refresh_from_db(fields=["fusion_tuning"])
        if (owned.fusion_tuning or {}).get("status") == "done":
            messages.success(request, _("Tuning finished: see the table below."))
        else:
            messages.success(request, _("Tuning started in the background; refresh to see the table."))
    else:
        state = tuning.tuning_apply(actor=actor, collection=owned)
        messages.success(request, _("Applied: search and ask in this collection now use %(fusion)s.")
                         % {"fusion": state["in_use"]})


def _tuning_context(request: HttpRequest, collection: Collection) -> dict[str, object]:
    """The tuning card's data, for owners only (editors see the page without the card)."""
    if not selectors.owned_collections(request.user).filter(pk=collection.pk).exists():
        return {"tuning": None}
    state = tuning.fusion_state(collection)
    stored = fusion_from_dict(state["stored"]) if state["stored"] else None
    run = state["tuning"] or None
    return {
        "tuning": state, "run": run, "result": (run or {}).get("result"),
        "stored_described": stored.describe() if stored is not None else "",
        "missing_questions": max(0, state["min_questions"] - state["golden_questions"]),
    }
