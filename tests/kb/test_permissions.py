"""Property test: what each user can list, get, search and ask about == a brute-force oracle.

Hypothesis generates users (with attributes), groups and memberships,
collection owners and grants (to users and groups, as viewer/editor/owner),
documents (collection, attributes, deleted or not) and policies (per
collection and platform-wide).  The oracle decides readability from the
generated data alone — RBAC by walking grants and memberships, ABAC by the
policies' Python predicates — and every read path must return exactly that.
"""

from __future__ import annotations

import os

import pytest
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from access.administration import policy_set
from access.models import Policy as PolicyRow
from access.models import User
from access.policy import Policy, PolicyError
from access.services import SYSTEM, Actor
from kb import answering, search, selectors, services
from kb.exceptions import NotFound
from kb.models import Collection, Document
from tests.access.test_policy import attributes, policies
from tests.kb.permission_corpus import WORD, build_corpus, one_torch_thread  # noqa: F401

pytestmark = pytest.mark.django_db

# Each example is a whole world checked for every one of its N_USERS users:
# 100 examples are 400 (world, user) cases.  CAIRN_HYPOTHESIS_EXAMPLES raises it.
MAX_EXAMPLES = int(os.environ.get("CAIRN_HYPOTHESIS_EXAMPLES", "100"))
N_USERS, N_GROUPS, N_COLLECTIONS, N_DOCS = 4, 3, 3, 10
ROLES = ["viewer", "editor", "owner"]


def maybe_policy():
    return st.one_of(st.none(), policies(max_leaves=3))


principal = st.one_of(st.tuples(st.just("user"), st.integers(0, N_USERS - 1)),
                      st.tuples(st.just("group"), st.integers(0, N_GROUPS - 1)))

world = st.fixed_dictionaries({
    "owners": st.lists(st.integers(0, N_USERS - 1), min_size=N_COLLECTIONS, max_size=N_COLLECTIONS),
    "user_attrs": st.lists(attributes, min_size=N_USERS, max_size=N_USERS),
    "members": st.sets(st.tuples(st.integers(0, N_USERS - 1), st.integers(0, N_GROUPS - 1)), max_size=8),
    "grants": st.lists(st.tuples(principal, st.integers(0, N_COLLECTIONS - 1), st.sampled_from(ROLES)), max_size=8),
    "doc_collection": st.lists(st.integers(0, N_COLLECTIONS - 1), min_size=N_DOCS, max_size=N_DOCS),
    "doc_attrs": st.lists(attributes, min_size=N_DOCS, max_size=N_DOCS),
    "deleted": st.lists(st.sampled_from([False, False, False, True]), min_size=N_DOCS, max_size=N_DOCS),
    "policies": st.lists(maybe_policy(), min_size=N_COLLECTIONS, max_size=N_COLLECTIONS),
    "platform": st.one_of(st.none(), st.none(), policies(max_leaves=2)),
})


def parsed(source: str | None) -> Policy | None:
    if source is None:
        return None
    try:
        return Policy.parse(source)
    except PolicyError:
        return None


def oracle_roles(w: dict, user: int) -> dict[int, str]:
    """The user's effective role per collection: the strongest of ownership and every grant."""
    rank = {"viewer": 1, "editor": 2, "owner": 3}
    groups = {g for u, g in w["members"] if u == user}
    last: dict[tuple, str] = {}
    for (kind, who), collection, role in w["grants"]:
        last[(kind, who, collection)] = role
    roles: dict[int, str] = {c: "owner" for c, owner in enumerate(w["owners"]) if owner == user}
    for (kind, who, collection), role in last.items():
        if (kind == "user" and who == user) or (kind == "group" and who in groups):
            if rank[role] > rank.get(roles.get(collection, ""), 0):
                roles[collection] = role
    return roles


def oracle(w: dict, user: int) -> set[int]:
    """Readable document indexes, from the generated data only."""
    groups = {g for u, g in w["members"] if u == user}
    granted: set[int] = {c for c, owner in enumerate(w["owners"]) if owner == user}
    # The last grant of a principal on a collection replaces earlier ones (share = set role).
    last: dict[tuple, str] = {}
    for (kind, who), collection, role in w["grants"]:
        last[(kind, who, collection)] = role
    for (kind, who, collection), _role in last.items():
        if (kind == "user" and who == user) or (kind == "group" and who in groups):
            granted.add(collection)  # every role includes viewing
    platform = parsed(w["platform"])
    readable = set()
    for d in range(N_DOCS):
        collection = w["doc_collection"][d]
        if w["deleted"][d] or collection not in granted:
            continue
        policy = parsed(w["policies"][collection])
        if policy is not None and not policy.allows(w["user_attrs"][user], w["doc_attrs"][d]):
            continue
        if platform is not None and not platform.allows(w["user_attrs"][user], w["doc_attrs"][d]):
            continue
        readable.add(d)
    return readable


@pytest.fixture
def corpus(isolated_storage, settings, one_torch_thread):  # noqa: F811 (a fixture)
    settings.CAIRN_ASK_PASSAGES = 50
    settings.CAIRN_RERANKER = None  # reranking only reorders; keep the property test fast
    users = [User.objects.create(username=f"u{i}") for i in range(N_USERS)]
    groups = [Group.objects.create(name=f"g{i}") for i in range(N_GROUPS)]
    collections = [Collection.objects.create(name=f"c{i}", owner=users[0]) for i in range(N_COLLECTIONS)]
    documents = build_corpus(collections[0], users[0], N_DOCS)
    return users, groups, collections, documents


def apply(w: dict, users, groups, collections, documents) -> None:
    for c, owner in enumerate(w["owners"]):
        Collection.objects.filter(pk=collections[c].pk).update(owner=users[owner])
        collections[c].owner = users[owner]
    for u, attrs in enumerate(w["user_attrs"]):
        User.objects.filter(pk=users[u].pk).update(attributes=attrs)
        users[u].attributes = attrs
    for u, g in w["members"]:
        users[u].groups.add(groups[g])
    for (kind, who), c, role in w["grants"]:
        services.collection_share(actor=SYSTEM, collection=collections[c],
                                  principal=users[who] if kind == "user" else groups[who], role=role)
    now = timezone.now()
    for d, document in enumerate(documents):
        Document.objects.unrestricted("test").filter(pk=document.pk).update(
            collection=collections[w["doc_collection"][d]], attributes=w["doc_attrs"][d],
            deleted_at=now if w["deleted"][d] else None,
        )
    for c, source in enumerate(w["policies"]):
        if parsed(source) is not None:
            policy_set(actor=SYSTEM, scope=PolicyRow.collection_scope(collections[c].pk), source=source,
                       collection_id=collections[c].pk)
    if parsed(w["platform"]) is not None:
        policy_set(actor=SYSTEM, scope=PolicyRow.PLATFORM, source=w["platform"])


def test_every_read_path_returns_exactly_what_the_oracle_allows(corpus):
    users, groups, collections, documents = corpus
    doc_index = {document.pk: i for i, document in enumerate(documents)}
    seen = {"cases": 0, "readable": 0, "hidden": 0}

    @settings(max_examples=MAX_EXAMPLES, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(w=world)
    def check(w):
        with transaction.atomic():
            apply(w, users, groups, collections, documents)
            for u, user in enumerate(users):
                user = User.objects.get(pk=user.pk)  # fresh, as a new request would load it
                expected = oracle(w, u)
                roles = oracle_roles(w, u)
                col_index = {c.pk: i for i, c in enumerate(collections)}
                assert {col_index[c.pk] for c in selectors.editable_collections(user)} == {
                    c for c, r in roles.items() if r in ("editor", "owner")}, ("edit", u, w)
                assert {col_index[c.pk] for c in selectors.owned_collections(user)} == {
                    c for c, r in roles.items() if r == "owner"}, ("own", u, w)
                listed = {doc_index[d.pk] for d in selectors.readable_documents(user)}
                assert listed == expected, ("list", u, w)
                found = {doc_index[r.document_id]
                         for r in search.chunk_search(user, WORD, k=50, mode="hybrid", rerank=False)}
                assert found == expected, ("search", u, w)
                if u == len(w["grants"]) % N_USERS:  # ask (search + generation) for one user per world
                    asked = answering.answer_question(user=user, actor=Actor(user=user), question=WORD)
                    assert {doc_index[p.document_id] for p in asked.passages} == expected, ("ask", u, w)
                if u == 1:  # single-object reads (document view, download, chunk preview) for one user
                    for d, document in enumerate(documents):
                        try:
                            selectors.document_get(user, document.pk)
                            selectors.chunk_get(user, document.current_version.chunk_id_start)
                            got = True
                        except NotFound:
                            got = False
                        assert got == (d in expected), ("get", u, d, w)
                seen["cases"] += 1
                seen["readable"] += bool(expected)
                seen["hidden"] += len(expected) < N_DOCS
            transaction.set_rollback(True)

    check()
    assert seen["cases"] >= MAX_EXAMPLES * N_USERS * 0.9
    assert seen["readable"] >= seen["cases"] // 10 and seen["hidden"] >= seen["cases"] // 10, seen


def test_a_stored_policy_that_no_longer_parses_denies_everything_it_governs(corpus):
    users, _, collections, documents = corpus
    owner = users[0]
    assert selectors.readable_documents(owner).count() == N_DOCS
    PolicyRow.objects.create(scope=PolicyRow.collection_scope(collections[0].pk), collection_id=collections[0].pk,
                             source="doc.x ==")  # written behind the service's back
    assert selectors.readable_documents(owner).count() == 0
    with pytest.raises(NotFound):
        selectors.document_get(owner, documents[0].pk)


def test_a_read_scope_serves_only_the_user_and_collections_it_was_decided_for(corpus):
    users, _, collections, documents = corpus
    scope = selectors.read_scope(users[0])
    assert scope.rule == f"rbac: {N_COLLECTIONS} readable collection(s); abac: no policy; deny by default"
    with pytest.raises(ValueError):
        search.chunk_search(users[1], WORD, scope=scope)
    with pytest.raises(ValueError):
        search.chunk_search(users[0], WORD, collection_ids=[collections[0].pk], scope=scope)
    found = search.chunk_search(users[0], WORD, k=50, rerank=False, scope=scope)
    assert {r.document_id for r in found} == {d.pk for d in documents}


def test_the_read_decision_reads_grants_and_policies_in_one_query(corpus, django_assert_num_queries):
    """Every search and answer makes this decision: RBAC's collection ids and the ABAC policies come back
    in one round trip, each policy still read on the request that uses it."""
    users, _, collections, documents = corpus
    owner = users[0]
    policy_set(actor=Actor(user=owner), scope=PolicyRow.collection_scope(collections[0].pk),
               source='doc.level == "public"', collection_id=collections[0].pk)
    policy_set(actor=SYSTEM, scope=PolicyRow.PLATFORM, source='doc.level == "public" or user.clearance == "x"')
    selectors.read_scope(owner)  # Django's content-type cache, per process, warm in a serving process
    with django_assert_num_queries(1):
        scope = selectors.read_scope(owner)
    assert scope.collection_ids == tuple(c.pk for c in collections)
    assert scope.applied == ("platform", f"collection:{collections[0].pk}")
    assert selectors.readable_documents(owner).count() == 0  # no document is labelled public
    PolicyRow.objects.filter(scope=PolicyRow.PLATFORM).delete()
    with django_assert_num_queries(1):
        scope = selectors.read_scope(owner)
    assert scope.applied == (f"collection:{collections[0].pk}",)
