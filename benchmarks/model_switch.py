"""Blue-green embedding-model switch at scale: time and peak memory of ``cairn_model_switch``.

    python benchmarks/model_switch.py --n 200000 --json bench-results/model_switch.json

Builds a synthetic knowledge base the way ``search_api.py`` does (``--n``
chunks of Zipf text in documents of 10 chunks, indexed with random vectors
as if by the bundled model), then switches it to another model: a
1-layer, 384-wide BERT built on the fly (random weights, so it embeds
fast; its vectors have the bundled model's size, which is what the
memory depends on).  A thread samples the process's RSS every 20 ms while
the switch runs.  Reported: the switch's wall time, chunks/s, RSS before
and at its peak, and the peak's excess over the vectors' own size
(``n × 384 × 4`` bytes).  ``--data-dir DIR`` keeps the knowledge base for
another run (it then switches back and forth between the two models).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import search_api  # noqa: E402
from _setup import ROOT, django_setup, print_table, write_json  # noqa: E402


def rss_mib() -> float:
    return search_api.proc_stat(os.getpid())[0]


class PeakRss:
    def __init__(self, every: float = 0.02) -> None:
        self.peak = rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            self.peak = max(self.peak, rss_mib())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mib())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    search_api.corpus_arguments(parser, n=200_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.dim = 384

    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="cairn-switch-bench-"))
    reuse = (data_dir / "cairn.sqlite3").exists()
    django_setup(str(data_dir), **search_api.team_env(data_dir))
    if not reuse:
        search_api.build_corpus(args)

    import torch
    from django.conf import settings

    from ingestion import model_switch
    from tests.kb.tiny_embedder import build_tiny_embedder

    torch.manual_seed(0)
    tiny_dir = data_dir / "tiny-model"
    if not (tiny_dir / "tiny-embedder").exists():
        build_tiny_embedder(tiny_dir, dim=args.dim)
    tiny = str(tiny_dir / "tiny-embedder")
    # Switch to the tiny model, or back to the bundled one when an earlier run left the tiny one active.
    target = None if model_switch.active_model().path == tiny else tiny
    settings.CAIRN_EMBEDDING_MODEL = target
    before = rss_mib()
    t = time.perf_counter()
    with PeakRss() as peak:
        result = model_switch.model_switch(target)
    seconds = time.perf_counter() - t
    vectors_mib = result.chunks * args.dim * 4 / 2**20
    report: dict[str, Any] = {
        "n": args.n, "chunks": result.chunks, "switched": result.switched, "to": result.active,
        "seconds": seconds, "chunks_per_s": result.chunks / seconds, "rss_before_mib": before,
        "rss_peak_mib": peak.peak, "vectors_mib": vectors_mib, "root": str(ROOT),
    }
    print_table(f"Embedding-model switch, {result.chunks:,} chunks ({result.previous} -> {result.active})", [
        {"measure": "wall time", "value": f"{seconds:.0f} s ({report['chunks_per_s']:.0f} chunks/s)"},
        {"measure": "RSS before / peak", "value": f"{before:.0f} / {peak.peak:.0f} MiB"},
        {"measure": "peak - before", "value": f"{peak.peak - before:.0f} MiB"},
        {"measure": "the vectors themselves (float32)", "value": f"{vectors_mib:.0f} MiB"},
    ])
    write_json(str(args.json) if args.json else None, report)


if __name__ == "__main__":
    main()
