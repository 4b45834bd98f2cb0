""""No good match": the evidence check (kb/retrieval/evidence.py) and what search and ask say when it fires."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from kb.answering import NO_GOOD_MATCH_ANSWER
from kb.retrieval.evidence import Null, Thresholds, evidence_of, is_weak
from kb.retrieval.fusion import Leg
from kb.retrieval.hybrid import Retrieval
from kb.retrieval.lexical import BM25Index
from kb.retrieval.tokenize import tokenize
from tests.kb.conftest import upload


def bm25(texts: list[str]) -> BM25Index:
    index = BM25Index()
    index.add(np.arange(1, len(texts) + 1), [tokenize(t) for t in texts])
    return index


def test_term_coverage_is_the_idf_weighted_share_of_query_terms_a_chunk_holds():
    index = bm25(["turbine hall maintenance", "turbine blades", "visitors badge", "front desk badge"])
    n = 4
    idf = {term: float(np.log1p((n - df + 0.5) / (df + 0.5))) for term, df in
           {"turbine": 2, "maintenance": 1, "zebra": 0}.items()}
    coverage = index.term_coverage(tokenize("turbine maintenance zebra"), [1, 2, 3, 99])
    total = sum(idf.values())
    assert coverage.tolist() == pytest.approx([(idf["turbine"] + idf["maintenance"]) / total,
                                               idf["turbine"] / total, 0.0, 0.0])
    assert index.term_coverage([], [1]).tolist() == [0.0]


LIMITS = Thresholds(dense=0.35, margin=0.2, lexical=0.5, agreement=0.1)


def test_a_match_needs_one_leg_to_vouch_and_the_lexical_leg_needs_the_embedder_to_agree():
    assert is_weak(0.3, 0.1, 0.2, 0.0, thresholds=LIMITS)                # nothing strong
    assert not is_weak(0.6, 0.3, 0.2, 0.3, thresholds=LIMITS)            # the embedder vouches
    assert is_weak(0.6, 0.1, 0.2, 0.1, thresholds=LIMITS)                # high cosine, but so is everything else
    assert not is_weak(0.3, 0.1, 0.9, 0.15, thresholds=LIMITS)           # the words are there, and related
    assert is_weak(0.3, 0.1, 0.9, 0.0, thresholds=LIMITS)                # the words are there, the text is not
    assert is_weak(None, None, None, None, thresholds=LIMITS)            # nothing ran
    assert not is_weak(None, None, 0.9, None, thresholds=LIMITS)         # lexical-only search: coverage alone
    assert is_weak(None, None, 0.2, None, thresholds=LIMITS)


def test_evidence_reads_the_dense_margin_and_the_covering_passages_agreement():
    index = bm25(["turbine hall maintenance window", "turbine blades", "visitors badge"])
    dense = Leg(np.array([2, 1, 3]), np.array([0.7, 0.5, 0.1], dtype=np.float32))
    lexical = Leg(np.array([1, 2]), np.array([3.0, 1.0], dtype=np.float32))

    evidence = evidence_of(Retrieval([], dense, lexical), index, tokenize("turbine maintenance"), thresholds=LIMITS)

    assert evidence.dense_best == pytest.approx(0.7)
    assert evidence.dense_margin == pytest.approx(0.7 - 0.5)            # the median of the candidates is 0.5
    assert evidence.lexical_coverage == pytest.approx(1.0)              # chunk 1 holds both terms
    assert evidence.lexical_agreement == pytest.approx(0.5 - 0.5)       # chunk 1's cosine minus the median
    assert evidence.no_good_match is False                              # the dense leg vouches (0.7, +0.2)
    assert set(evidence.as_dict()) == {"dense_best", "dense_margin", "lexical_coverage", "lexical_agreement", "coherence",
                                       "no_good_match"}


HANDBOOK = [
    ("leave.md", b"# Annual leave\n\nEmployees get twenty-five days of paid holiday a year. Unused days carry over "
                 b"until the end of March.\n"),
    ("turbine.md", b"# Turbine hall\n\nThe quarterly maintenance window for the turbine hall starts at 06:00 on "
                   b"the first Sunday of the quarter.\n"),
    ("visitors.md", b"# Visitors\n\nVisitors must sign in at the front desk and wear a badge at all times.\n"),
]


@pytest.fixture
def handbook(api, collection_id) -> int:
    for name, data in HANDBOOK:
        assert upload(api, collection_id, name, data).status_code == 201
    return collection_id


@pytest.mark.django_db(transaction=True)
def test_search_says_no_good_match_for_nonsense_but_not_for_a_real_question(api, handbook):
    nonsense = api.get("/api/v1/search", {"q": "xylophone quantum zebra", "collection": handbook}).json()
    real = api.get("/api/v1/search", {"q": "how many days of holiday do employees get",
                                      "collection": handbook}).json()

    assert nonsense["no_good_match"] is True and nonsense["results"]  # still the least bad passages, flagged
    assert set(nonsense["evidence"]) == {"dense_best", "dense_margin", "lexical_coverage", "lexical_agreement", "coherence",
                                         "no_good_match"}
    assert real["no_good_match"] is False and real["results"][0]["title"] == "leave.md"
    assert real["evidence"]["dense_best"] > nonsense["evidence"]["dense_best"]


@pytest.mark.django_db(transaction=True)
def test_ask_answers_no_good_match_instead_of_citing_unrelated_passages(api, handbook):
    body = api.post("/api/v1/ask", {"question": "xylophone quantum zebra", "collection": handbook},
                    format="json").json()

    assert body["answer"] == NO_GOOD_MATCH_ANSWER and body["no_good_match"] is True
    assert body["citations"] == [] and body["passages"] == []

    real = api.post("/api/v1/ask", {"question": "When does the turbine hall maintenance window start?",
                                    "collection": handbook}, format="json").json()
    assert real["no_good_match"] is False and "06:00" in real["answer"] and real["citations"]


@pytest.mark.django_db(transaction=True)
def test_a_streamed_ask_with_no_good_match_streams_the_same_answer(api, handbook):
    response = api.post("/api/v1/ask", {"question": "xylophone quantum zebra", "collection": handbook,
                                        "stream": True}, format="json")

    frames = b"".join(response.streaming_content).decode().strip().split("\n\n")
    events = {f.split("\n")[0][7:]: json.loads(f.split("\n")[1][6:]) for f in frames}
    assert list(events) == ["start", "token", "citations", "done"]
    assert events["done"]["answer"] == NO_GOOD_MATCH_ANSWER and events["done"]["no_good_match"] is True
    assert events["citations"]["citations"] == []


@pytest.mark.django_db(transaction=True)
def test_thresholds_come_from_the_settings(api, handbook, settings):
    # The dense leg vouches for anything, even with no query term in any passage.
    settings.CAIRN_NO_MATCH_DENSE = settings.CAIRN_NO_MATCH_MARGIN = settings.CAIRN_NO_MATCH_DENSE_UNSEEN = -1.0
    body = api.get("/api/v1/search", {"q": "xylophone quantum zebra", "collection": handbook}).json()
    assert body["no_good_match"] is False


def test_term_coverage_matches_a_brute_force_count_after_adds_in_batches_and_removals():
    rng = np.random.default_rng(15)
    words = [f"w{i}" for i in range(40)]
    texts = {i: " ".join(rng.choice(words, size=int(rng.integers(1, 12)))) for i in range(1, 301)}
    index = BM25Index()
    for start in range(1, 301, 50):  # several pending blocks, consolidated into one matrix
        ids = list(range(start, start + 50))
        index.add(np.array(ids), [tokenize(texts[i]) for i in ids])
    index.remove(np.arange(1, 130, 2))  # 65 of 300: past the compaction threshold (20 %)
    live = {i: set(tokenize(t)) for i, t in texts.items() if not (i < 130 and i % 2 == 1)}
    n = len(live)
    for query in ("w1 w2 w3", "w0 w39 nothing", "w7"):
        terms = list(dict.fromkeys(tokenize(query)))
        df = {t: sum(t in toks for toks in live.values()) for t in terms}
        idf = {t: float(np.log1p((n - df[t] + 0.5) / (df[t] + 0.5))) for t in terms}
        chunk_ids = [2, 4, 150, 299, 1]  # 1 was removed
        expected = [sum(idf[t] for t in terms if i in live and t in live[i]) / sum(idf.values()) for i in chunk_ids]
        assert index.term_coverage(tokenize(query), chunk_ids).tolist() == pytest.approx(expected)


NONSENSE = ["xylophone quantum zebra", "asdfgh qwerty zxcvb", "marshmallow trampoline saxophone",
            "how do I bake sourdough bread at home", "今天晚上吃什么好"]
# A small Chinese handbook: enough passages that the dense candidates' median is the Chinese background.
HANDBOOK_ZH = {
    "nianjia.md": "员工每年享有二十五天带薪年假。未休完的年假可以保留到次年三月底。",
    "fangke.md": "访客必须在前台登记，并始终佩戴访客证。",
    "bingjia.md": "员工生病时可以请病假，连续三天以上需要提供医院证明。",
    "jiaban.md": "工作日加班按一点五倍工资计算，周末加班可以安排调休。",
    "baoxiao.md": "差旅费用报销需要在出差结束后三十天内提交发票。",
    "tingche.md": "公司地下停车场仅限员工使用，车辆需要提前登记车牌号码。",
    "shitang.md": "员工食堂每天中午十一点半开始供应午餐，晚餐供应到七点。",
    "xiaofang.md": "每季度进行一次消防演习，所有员工必须按照疏散路线撤离。",
    "diannao.md": "笔记本电脑丢失必须在二十四小时内报告信息安全部门。",
    "peixun.md": "新员工入职第一周需要完成安全培训和保密协议的签署。",
    "gongzi.md": "工资在每月十日通过银行转账发放，工资单可以在内网查询。",
    "mima.md": "系统密码每九十天必须更换一次，且不能与前五次密码相同。",
}
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("query", NONSENSE)
def test_nonsense_in_any_script_gets_no_good_match(api, handbook, query):
    body = api.get("/api/v1/search", {"q": query, "collection": handbook}).json()
    assert body["no_good_match"] is True, body["evidence"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("query", "title"), [
    ("how many days of holiday do employees get", "leave.md"),
    ("turbine hall maintenance", "turbine.md"),                    # a keyword query
    ("Where do visitors sign in?", "visitors.md"),
])
def test_real_questions_are_matches(api, handbook, query, title):
    body = api.get("/api/v1/search", {"q": query, "collection": handbook}).json()
    assert body["no_good_match"] is False, body["evidence"]
    assert body["results"][0]["title"] == title


@pytest.mark.django_db(transaction=True)
def test_chinese_questions_match_chinese_documents_and_chinese_nonsense_does_not(api, handbook):
    for name, text in HANDBOOK_ZH.items():
        assert upload(api, handbook, name, f"# {name}\n\n{text}\n".encode()).status_code == 201

    real = api.get("/api/v1/search", {"q": "员工每年有多少天年假", "collection": handbook}).json()
    visitor = api.get("/api/v1/search", {"q": "访客证", "collection": handbook}).json()
    nonsense = api.get("/api/v1/search", {"q": "自行车内胎怎么换", "collection": handbook}).json()
    for label, body in (("real", real), ("visitor", visitor), ("nonsense", nonsense)):
        assert body["evidence"]["lexical_coverage"] is not None, label

    assert real["no_good_match"] is False and real["results"][0]["title"] == "nianjia.md", real["evidence"]
    assert visitor["no_good_match"] is False and visitor["results"][0]["title"] == "fangke.md", visitor["evidence"]
    assert nonsense["no_good_match"] is True, nonsense["evidence"]


# --- the co-occurrence test and the collection's null ----------------------------------------------------

def _topical(n_topics: int = 20, per_topic: int = 10) -> list[str]:
    """``n_topics`` topics of ``per_topic`` passages: each topic's two words always together, never elsewhere."""
    words = [(f"alpha{chr(97 + t)}x", f"beta{chr(97 + t)}y") for t in range(n_topics)]
    return [f"{a} {b} filler{i % 3}" for a, b in words for i in range(per_topic)]


def test_cooccurrence_counts_passages_holding_the_terms_together_against_chance():
    texts = _topical()
    index = bm25(texts)
    found = index.cooccurrence(tokenize("alphaax betaay filler0"), 1)  # passage 1 holds filler0 (df 80)
    assert (found.known, found.held) == (3, 3)
    # All three together, then each pair (rarest first): alphaax+betaay, alphaax+filler0, betaay+filler0.
    assert [t[0] for t in found.tests] == [4, 10, 4, 4] and [t[2] for t in found.tests] == [10, 10, 10, 10]
    assert [t[1] for t in found.tests] == pytest.approx([200 * (10 / 200) ** 2 * 80 / 200, 200 * (10 / 200) ** 2,
                                                        200 * (10 / 200) * (80 / 200), 200 * (10 / 200) * (80 / 200)])
    # Two words of different topics: passage 1 holds one of them; nothing holds both.
    apart = index.cooccurrence(tokenize("alphaax betaby"), 1)
    assert apart.held == 1 and apart.tests == ((0, pytest.approx(0.5), 10),)
    # Deleted passages no longer count.
    index.remove(np.arange(1, 6))
    assert index.cooccurrence(tokenize("alphaax betaay"), 6).tests[0][0] == 5


def test_cooccurrence_of_common_words_is_counted_on_a_sample_of_postings(monkeypatch):
    texts = [("common " if i % 2 else "") + ("usual" if i % 3 == 0 else "other") for i in range(6000)]
    index = bm25(texts)
    first = next(i for i in range(6000) if i % 2 and i % 3 == 0) + 1
    exact = index.cooccurrence(tokenize("common usual"), first).tests[0]
    assert exact[0] == 1000                                    # i odd and a multiple of 3: 1 in 6
    monkeypatch.setattr(BM25Index, "COOCCURRENCE_SAMPLE", 100)
    sampled = index.cooccurrence(tokenize("common usual"), first).tests[0]  # 100 of usual's 2000 rows
    assert sampled[1] == exact[1] and abs(sampled[0] - 1000) <= 250  # not 0: no aliasing with every third row


def test_coherence_separates_words_that_belong_together_from_a_bag_of_words():
    from kb.retrieval.evidence import coherence_of

    index = bm25(_topical())
    together = coherence_of(index, tokenize("alphaax betaay"), 1, level=0.01)
    apart = coherence_of(index, tokenize("alphaax betaby"), 1, level=0.01)
    assert together is not None and together < 1e-6
    assert apart == 1.0
    # One known word: nothing to test. A collection too small for any co-occurrence to be significant: no say.
    assert coherence_of(index, tokenize("alphaax zebra"), 1, level=0.01) is None
    tiny = bm25(["turbine hall maintenance", "turbine blades", "visitors badge"])
    assert coherence_of(tiny, tokenize("turbine maintenance"), 1, level=0.01) is None
    assert coherence_of(index, tokenize("alphaax betaby"), 1, level=0.0) is None  # the test switched off


def test_an_incoherent_query_needs_the_collections_null_and_gets_no_lexical_vouching():
    limits = Thresholds(dense=0.35, lexical=0.5, agreement=0.1, coherence=0.01, null_dense=0.45)
    assert not is_weak(0.4, 0.2, 0.9, 0.2, thresholds=limits, coherence=1e-5)   # coherent: as before
    assert not is_weak(0.4, 0.2, 0.9, 0.2, thresholds=limits, coherence=None)   # untestable: as before
    assert is_weak(0.4, 0.2, 0.9, 0.2, thresholds=limits, coherence=0.5)        # incoherent, below the null
    assert not is_weak(0.5, 0.2, 0.9, 0.2, thresholds=limits, coherence=0.5)    # incoherent, above the null
    off = Thresholds(dense=0.35, lexical=0.5, agreement=0.1, coherence=0.0, null_dense=0.45)
    assert not is_weak(0.4, 0.2, 0.9, 0.2, thresholds=off, coherence=0.5)


def test_a_nearly_coherent_query_close_to_the_text_is_coherent_by_both_witnesses_together():
    """Fisher's method over the co-occurrence test and the null's p-value of the best cosine.

    "Who was the Norse leader?" on SQuAD's 173 paragraphs: the rare "Norse"
    meets "leader" once, p = 0.055 — not significant alone; its best cosine,
    0.369, is reached by fewer than one null query in ten. Together they
    reject a bag of words at 0.05, so the lexical leg (both words in one
    passage, which the embedder agrees with) vouches for it.
    """
    from kb.retrieval.evidence import fisher, null_from

    null = null_from(np.linspace(0.10, 0.40, 200))  # 95th percentile 0.385
    assert null is not None and null.threshold == pytest.approx(0.385)
    assert null.p_value(0.369) == pytest.approx(22 / 201, abs=0.01) and null.p_value(0.5) == 1 / 201
    assert null.p_value(0.0) == 1.0
    assert fisher(0.055, 0.11) < 0.05 < fisher(0.055, 0.5)
    assert fisher(1.0, 1 / 201) == pytest.approx(0.0313, abs=1e-3)
    from scipy.stats import chi2  # the closed form against the χ² tail it stands for

    for ps in [(0.055, 0.11), (0.5, 0.5), (1e-5, 0.9), (0.3,), (0.2, 0.3, 0.4)]:
        assert fisher(*ps) == pytest.approx(chi2.sf(-2 * np.log(ps).sum(), 2 * len(ps)), rel=1e-9)
    base = Thresholds(dense=0.35, lexical=0.5, agreement=0.1, coherence=0.05)
    with_null = Thresholds(dense=0.35, lexical=0.5, agreement=0.1, coherence=0.05, null_dense=null.threshold,
                           null=null)
    threshold_only = replace(with_null, null=None)
    norse = dict(dense_best=0.369, dense_margin=0.30, lexical_coverage=1.0, lexical_agreement=0.28)
    assert is_weak(**norse, thresholds=threshold_only, coherence=0.055)   # the third version: refused
    assert not is_weak(**norse, thresholds=with_null, coherence=0.055)    # both witnesses: a match
    assert not is_weak(**norse, thresholds=base, coherence=0.04)          # coherent alone, as before
    # Not close enough to the text: the embedder does not corroborate, still a bag of words.
    middling = dict(norse, dense_best=0.25)
    assert is_weak(**middling, thresholds=with_null, coherence=0.055)
    # Words that never meet gain nothing: the null's threshold decides, as before.
    assert is_weak(**norse, thresholds=with_null, coherence=1.0)
    assert not is_weak(**dict(norse, dense_best=0.39), thresholds=with_null, coherence=1.0)
    # The test switched off switches the combination off too.
    off = replace(with_null, coherence=0.0)
    assert not is_weak(**middling, thresholds=off, coherence=0.9)


def test_evidence_asks_for_the_null_only_when_the_verdict_turns_on_it():
    index = bm25(_topical())
    asked: list[int] = []

    def null() -> Null:
        asked.append(1)
        return Null((0.6,) * 200)

    def run(query: str, best: float) -> bool:
        dense = Leg(np.arange(1, 101), np.linspace(best, 0.0, 100).astype(np.float32))
        lexical = Leg(np.array([1, 11]), np.array([3.0, 1.0], dtype=np.float32))
        limits = Thresholds(dense=0.35, lexical=0.5, agreement=0.1)
        return evidence_of(Retrieval([], dense, lexical), index, tokenize(query), thresholds=limits,
                           null=null).no_good_match

    assert run("alphaax betaay", 0.5) is False and asked == []           # coherent: no null needed
    assert run("alphaax betaby", 0.05) is True and asked == []           # weak even were it coherent
    assert run("alphaax betaby", 0.5) is True and asked == [1]           # a bag of words below its null
    assert run("alphaax betaby", 0.7) is False and asked == [1, 1]       # ... or above it


def test_null_queries_are_random_words_of_the_collection_and_the_null_is_their_95th_percentile():
    from kb.retrieval.evidence import null_queries, null_threshold

    names = [f"harbour{a}{b}" for a in "abcdef" for b in "ghijk"]  # 30 words, letters only
    texts = [f"passage about {names[i % 30]} {names[(i * 7) % 30]} 港口起重机 and 12345" for i in range(100)]
    queries = null_queries(texts)
    assert len(queries) == 200 and queries == null_queries(texts)                  # seeded
    words = {w for q in queries for w in q.split()}
    assert all(2 <= len(q.split()) <= 4 for q in queries)
    assert "港口起重机" not in words and "12345" not in words and "and" not in words  # CJK runs, digits, short words
    assert null_queries(texts[:1]) == []                                            # too few words in 2+ passages
    assert null_threshold(np.linspace(0, 1, 101)) == pytest.approx(0.95)
    assert null_threshold([0.5] * 10) is None                                       # too few to say


TOPICS = {
    "turbine": "turbine blades bearings lubrication inspection vibration",
    "leave": "holiday allowance vacation carryover approval calendar",
    "visitors": "visitors badge reception escort lanyard register",
    "payroll": "salary payslip taxes pension deductions overtime",
    "fire": "evacuation alarm extinguisher assembly sprinkler drill",
    "laptop": "laptop encryption password updates antivirus backup",
    "canteen": "canteen menu vegetarian lunch allergens kitchen",
    "parking": "parking permit bicycle charging spaces garage",
    "travel": "travel booking flights hotel receipts reimbursement",
    "chemicals": "chemicals goggles gloves ventilation spillage storage",
    "printing": "printer toner paper scanning copier jams",
    "recruiting": "candidates interview shortlist referees contract onboarding",
}


@pytest.mark.django_db(transaction=True)
def test_search_flags_a_bag_of_the_collections_own_words_and_keeps_its_null_beside_the_index(
    api, collection_id, monkeypatch
):
    from kb import index

    for topic, words in TOPICS.items():
        w = words.split()
        for i in range(5):
            text = (f"# {topic.title()} note {i}\n\nThe {w[i % 6]} and the {w[(i + 1) % 6]} are checked with the "
                    f"{w[(i + 2) % 6]} every week; {w[(i + 3) % 6]} and {w[(i + 4) % 6]} follow {w[(i + 5) % 6]}.\n")
            assert upload(api, collection_id, f"{topic}-{i}.md", text.encode()).status_code == 201
    computed: list[int] = []
    compute = index._compute_null
    monkeypatch.setattr(index, "_compute_null", lambda snapshot: computed.append(snapshot.size) or compute(snapshot))
    monkeypatch.setattr(index, "_null_memo", {})

    def search(q: str) -> dict:
        return api.get("/api/v1/search", {"q": q, "collection": collection_id}).json()

    real = search("turbine blades vibration inspection")
    assert real["no_good_match"] is False and real["evidence"]["coherence"] < 0.01
    assert computed == []                                  # a coherent query never needs the null
    bag = search("payslip goggles")                        # two words of the collection, never together
    assert bag["evidence"]["coherence"] == 1.0
    snapshot = index.index_reader().snapshot()
    null = index.no_match_null(snapshot)
    assert computed == [60] and null is not None and -1.0 <= null.threshold <= 1.0 and len(null.cosines) == 200
    assert bag["no_good_match"] is (bag["evidence"]["dense_best"] < null.threshold)   # no lexical vouching
    stored = json.loads((index.index_store().dir / index.NULL_FILE).read_text())
    assert stored["size"] == 60 and stored["threshold"] == pytest.approx(null.threshold)
    # Another process (no memo) reads the file instead of computing it again.
    monkeypatch.setattr(index, "_null_memo", {})
    assert index.no_match_null(snapshot) == null and computed == [60]
    # A file an earlier version wrote (a threshold, no cosines) is computed afresh, not misread.
    (index.index_store().dir / index.NULL_FILE).write_text(json.dumps({"size": 60, "threshold": 0.5}))
    monkeypatch.setattr(index, "_null_memo", {})
    assert index.no_match_null(snapshot) == null and computed == [60, 60]
    # Once the index grew by more than a tenth, the next time it is needed it is computed afresh.
    for i in range(7):
        assert upload(api, collection_id, f"extra-{i}.md", f"# Extra {i}\n\nKettle descaling rota {i}.\n".encode()
                      ).status_code == 201
    index.no_match_null(index.index_reader().snapshot())
    assert computed == [60, 60, 67]


def test_a_question_naming_a_rare_thing_next_to_words_that_always_go_together_is_coherent():
    from kb.retrieval.evidence import coherence_of

    # Twenty reports of three passages; every report's first passage names its keeper and code word.
    texts = []
    for i in range(20):
        texts += [f"site{chr(97 + i)}q report keeper wrote the code word", f"site{chr(97 + i)}q routine inspection",
                  "routine repairs inventory"]
    index = bm25(texts)
    # All four together happen once (the rare site's first passage): no better than chance on its own.
    found = index.cooccurrence(tokenize("which code word did the keeper of sitecq write"), 7)
    assert found.tests[0][0] == 1 and found.tests[0][1] > 0.05
    # But keeper, code and word go together in every report: a question, not a bag of words.
    assert coherence_of(index, tokenize("which code word did the keeper of sitecq write"), 7, level=0.05) < 1e-3
