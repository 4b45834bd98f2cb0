"""Convert a SQuAD JSON file (v1.1 or v2.0 layout) into a BEIR-layout retrieval set.

    python benchmarks/squad_to_beir.py SQUAD.json OUT_DIR [--max-paragraphs N] [--max-queries N]

Document = one paragraph (title: the article title), query = one answerable
question, qrels = the paragraph it was asked about (relevance 1).  Questions
marked ``is_impossible`` (SQuAD 2.0) are left out: they have no relevant
paragraph.  The first ``--max-paragraphs`` paragraphs in file order are kept
and queries are taken from them, in file order, up to ``--max-queries``, so
the subset is deterministic.  Writes ``corpus.jsonl``, ``queries.jsonl``,
``qrels/test.tsv`` and ``answers.jsonl`` (``{"_id", "answers"}``, the gold
answer strings) to ``OUT_DIR`` — keep that outside the repository.

The set used in docs/benchmarks.md: ``dev-v1.1.json`` of the GitHub repository
VinACE/san_mrc at commit 74f10c582d3fb1249ef9559967dc9cb6c989acbe (despite its
name, a SQuAD 2.0 dev excerpt: 5 articles, 173 paragraphs, 1,407 questions).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def convert(squad: dict, out: Path, *, max_paragraphs: int, max_queries: int) -> tuple[int, int]:
    corpus: list[dict[str, str]] = []
    queries: list[dict[str, str]] = []
    answers: list[dict[str, object]] = []
    qrels: list[tuple[str, str]] = []
    for article_index, article in enumerate(squad["data"]):
        for paragraph_index, paragraph in enumerate(article["paragraphs"]):
            if len(corpus) >= max_paragraphs:
                break
            doc_id = f"p{article_index}-{paragraph_index}"
            corpus.append({"_id": doc_id, "title": article["title"].replace("_", " "),
                           "text": paragraph["context"]})
            for qa in paragraph["qas"]:
                if qa.get("is_impossible") or not qa.get("answers") or len(queries) >= max_queries:
                    continue
                queries.append({"_id": qa["id"], "text": qa["question"].strip()})
                answers.append({"_id": qa["id"], "answers": sorted({a["text"] for a in qa["answers"]})})
                qrels.append((qa["id"], doc_id))
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    for name, rows in (("corpus.jsonl", corpus), ("queries.jsonl", queries), ("answers.jsonl", answers)):
        with open(out / name, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    with open(out / "qrels" / "test.tsv", "w", encoding="utf-8") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        handle.writelines(f"{q}\t{d}\t1\n" for q, d in qrels)
    return len(corpus), len(queries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("squad", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--max-paragraphs", type=int, default=5000)
    parser.add_argument("--max-queries", type=int, default=1000)
    args = parser.parse_args()
    squad = json.loads(args.squad.read_text(encoding="utf-8"))
    documents, questions = convert(squad, args.out, max_paragraphs=args.max_paragraphs, max_queries=args.max_queries)
    print(f"{args.out}: {documents} paragraphs, {questions} questions (version {squad.get('version', '?')})")


if __name__ == "__main__":
    main()
