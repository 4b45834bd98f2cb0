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
from kb import golden, selectors
from kb.exceptions import InvalidInput, NotFound


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
        "latest": latest, "latest_details": latest_details,
    })
