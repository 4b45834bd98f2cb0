"""`manage.py cairn_eval` on a tiny generated BEIR dataset, and its metrics."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from kb.evaluation import DatasetError, load_beir, mrr_at, ndcg_at, recall_at

pytestmark = pytest.mark.django_db(transaction=True)

CORPUS = [
    ("d1", "Boiler descaling", "The boiler is descaled every month with citric acid by the maintenance crew."),
    ("d2", "Turbine hall", "The turbine hall maintenance window opens at six on the first Sunday of the quarter."),
    ("d3", "Visitors", "Visitors sign in at the front desk and wear a visible badge at all times."),
    ("d4", "Parental leave", "Employees receive twenty days of parental leave after the birth of a child."),
    ("d5", "Backups", "Nightly backups of the database server are kept offsite for ninety days."),
    ("d6", "Forklifts", "Forklift batteries are charged in bay seven overnight."),
]
QUERIES = [
    ("q1", "how often is the boiler descaled with citric acid"),
    ("q2", "when does the turbine hall maintenance window open"),
    ("q3", "how long are database backups kept offsite"),
]
QRELS = [("q1", "d1", 1), ("q2", "d2", 1), ("q3", "d5", 1)]


def write_beir(root, *, corpus=CORPUS, queries=QUERIES, qrels=QRELS, header=True):
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, t, x in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": i, "text": x}) + "\n" for i, x in queries))
    lines = (["query-id\tcorpus-id\tscore"] if header else []) + [f"{q}\t{d}\t{s}" for q, d, s in qrels]
    (root / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return root


def run(*args):
    out, err = io.StringIO(), io.StringIO()
    call_command("cairn_eval", *args, stdout=out, stderr=err)
    return out.getvalue()


def test_cairn_eval_ingests_the_dataset_and_prints_every_metric_per_mode(tmp_path, isolated_storage):
    dataset = write_beir(tmp_path / "tinybeir")

    out = run(str(dataset), "--json", str(tmp_path / "scores.json"))

    header, *rows = out.strip().splitlines()
    assert header.split() == ["mode", "nDCG@10", "R@10", "R@100", "MRR@10", "p50", "ms"]
    assert [r.split()[0] for r in rows] == ["lexical", "dense", "hybrid"]
    report = json.loads((tmp_path / "scores.json").read_text())
    assert report["documents"] == 6 and report["queries"] == 3 and report["embedding_model"]
    by_mode = {r["mode"]: r for r in report["results"]}
    # Each query paraphrases exactly one short document: every mode finds it first.
    for mode in ("lexical", "dense", "hybrid"):
        assert by_mode[mode]["ndcg10"] == pytest.approx(1.0) and by_mode[mode]["mrr10"] == pytest.approx(1.0)
        assert by_mode[mode]["recall10"] == pytest.approx(1.0) and by_mode[mode]["recall100"] == pytest.approx(1.0)

    # A second run reuses the ingested collection (content hashes dedup) and scores the same.
    again = run(str(dataset), "--modes", "hybrid")
    assert again.strip().splitlines()[1].split()[:5] == ["hybrid", "1.0000", "1.0000", "1.0000", "1.0000"]


def test_cairn_eval_adds_a_reranked_row_when_a_reranker_is_configured(tmp_path, isolated_storage, settings):
    from tests.kb.tiny_cross_encoder import build_tiny_cross_encoder

    settings.CAIRN_RERANKER = str(build_tiny_cross_encoder(tmp_path / "ce"))
    out = run(str(write_beir(tmp_path / "tinybeir")), "--modes", "hybrid,reranked",
              "--json", str(tmp_path / "s.json"))
    assert [r.split()[0] for r in out.strip().splitlines()[1:]] == ["hybrid", "reranked"]
    assert json.loads((tmp_path / "s.json").read_text())["reranker"].startswith("ce-")


@pytest.mark.parametrize(("breakage", "message"), [
    ("no-dir", "is not a directory"),
    ("no-corpus", "corpus.jsonl is missing"),
    ("no-qrels", "qrels/test.tsv is missing"),
    ("bad-json", "corpus.jsonl:2: not valid JSON"),
    ("no-id", "queries.jsonl:1: each line must be a JSON object"),
    ("bad-columns", "test.tsv:2: expected 3 tab-separated columns"),
    ("bad-score", "test.tsv:3: score 'high' is not an integer"),
    ("no-matching-queries", "no query of qrels/test.tsv appears in queries.jsonl"),
])
def test_a_missing_or_malformed_dataset_is_a_clear_command_error(tmp_path, breakage, message):
    root = write_beir(tmp_path / "beir")
    if breakage == "no-dir":
        root = tmp_path / "nowhere"
    elif breakage == "no-corpus":
        (root / "corpus.jsonl").unlink()
    elif breakage == "no-qrels":
        (root / "qrels" / "test.tsv").rename(root / "qrels" / "dev.tsv")
    elif breakage == "bad-json":
        (root / "corpus.jsonl").write_text('{"_id": "d1", "text": "ok"}\n{"_id": "d2", "text": \n')
    elif breakage == "no-id":
        (root / "queries.jsonl").write_text('{"text": "no id"}\n')
    elif breakage == "bad-columns":
        (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1 d1 1\n")
    elif breakage == "bad-score":
        (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\thigh\n")
    elif breakage == "no-matching-queries":
        write_beir(root, qrels=[("q9", "d1", 1)])

    with pytest.raises(DatasetError, match=message):
        load_beir(root)
    with pytest.raises(CommandError, match=message):
        run(str(root))
    if breakage == "no-qrels":
        with pytest.raises(CommandError, match=r"splits present: dev"):
            run(str(root))


def test_unknown_modes_are_refused(tmp_path):
    with pytest.raises(CommandError, match="unknown mode"):
        run(str(write_beir(tmp_path / "beir")), "--modes", "hybrid,magic")
    with pytest.raises(CommandError, match="needs CAIRN_RERANKER"):
        run(str(tmp_path / "beir"), "--modes", "reranked")


def test_metrics_against_hand_computed_values():
    ranked = ["a", "x", "b", "y"]
    relevant = {"a": 1, "b": 2, "z": 0}
    ideal = 2 / 1 + 1 / 1.584962500721156
    assert ndcg_at(ranked, relevant, 10) == pytest.approx((1 / 1 + 2 / 2) / ideal)
    assert recall_at(ranked, relevant, 1) == pytest.approx(0.5) and recall_at(ranked, relevant, 10) == 1.0
    assert mrr_at(["x", "b"], relevant, 10) == pytest.approx(0.5) and mrr_at(["x"], relevant, 10) == 0.0
