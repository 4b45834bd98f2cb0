"""The dense leg on a GPU: exact inner product over the stored vectors, the mask applied before top-k.

``DenseConfig.device`` (``CAIRN_DENSE_DEVICE``):

* ``cpu`` — the FAISS CPU path of ``dense.py`` (the default, unchanged);
* ``cuda`` — this module; a start-up check refuses it when no GPU is visible;
* ``auto`` — ``cuda`` when FAISS is a GPU build that sees a GPU, else ``cpu``;
* ``torch-cpu`` — this module's torch scan on CPU tensors: the GPU code path
  run where there is no GPU (tests, ``benchmarks/gpu/dense.py --device cpu``).

On the GPU every search is exact (flat).  The base's stored vectors — the
float32 rows of a flat base, the float16 refinement rows of the default
``PQ192x4fs,Refine(SQfp16)`` base upcast exactly to float32 (the values the
CPU's refinement scores) — and the delta's are copied to the device once,
and a query is one matrix product over all of them: at 1M × 384 that reads
1.5 GB, a fraction of a millisecond of a data-centre GPU's memory bandwidth.
The compressed scan that keeps the CPU fast buys nothing there, FAISS has no
GPU fast-scan, and an exact scan makes the GPU's top-k the true top-k of the
stored vectors (IVF-PQ or CAGRA would pay off only at tens of millions of
vectors, or when GPU memory is short).

Two backends run the scan:

* ``faiss`` — ``GpuIndexFlatIP`` from a FAISS GPU build (``pip install
  'cairn[gpu]'``), chosen when ``faiss.get_num_gpus() > 0``.  Its GPU flat
  index takes no ``IDSelector``, so a filtered search asks for ``depth``
  results and keeps the allowed ones.  Once at least ``k`` are allowed they
  are exactly the filtered top-k: every allowed vector not returned scores
  at most the depth-th result, so at most each kept one.  Otherwise it asks
  again four times deeper, and past FAISS's GPU limit of 2,048 it scores the
  allowed vectors exactly on the CPU.
* ``torch`` — the same scan as a torch matrix product on the CUDA device (any
  CUDA build of torch; no FAISS GPU build needed).  The allowed mask is
  gathered per row on the device and forbidden rows are set to -inf before
  ``topk``: a forbidden chunk is never ranked, whatever the share allowed.

Searches that arrive together are batched (``SearchBatcher``): a search that
finds the device idle runs at once, alone; those arriving while it runs wait
and then go as one matrix product.  Nothing waits for a batch to fill.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import faiss
import numpy as np

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")
BACKENDS = ("auto", "faiss", "torch")
FAISS_GPU_MAX_K = 2048          # the largest k FAISS's GPU flat search accepts
_SCORE_BYTES = 512 * 1024 ** 2  # bound on one block of (queries × rows) float32 scores on the device
_UPLOAD_ROWS = 65_536           # rows converted and copied per step (host memory stays small)


class DenseDeviceUnavailable(RuntimeError):
    """``CAIRN_DENSE_DEVICE=cuda`` on a host where neither torch nor FAISS sees a GPU."""


def faiss_gpu_count() -> int:
    """GPUs FAISS sees: 0 for a CPU build (and asked without touching CUDA there)."""
    count = getattr(faiss, "get_num_gpus", None)
    if count is None:
        return 0
    try:
        return int(count())
    except RuntimeError:
        return 0


def torch_gpu_count() -> int:
    """CUDA devices torch sees, asked through NVML: CUDA is not initialised in this process,
    so worker processes forked after a start-up check can still use the GPU."""
    try:
        import torch
    except ImportError:
        return 0
    return int(torch.cuda.device_count())


def device_problem(setting: str) -> str | None:
    """Why ``CAIRN_DENSE_DEVICE=setting`` cannot work on this host, or None (the start-up check)."""
    if setting != "cuda" or torch_gpu_count() > 0 or faiss_gpu_count() > 0:
        return None
    return ("CAIRN_DENSE_DEVICE=cuda, but no CUDA GPU is visible (torch sees none and FAISS is not a GPU "
            "build that sees one). Set CAIRN_DENSE_DEVICE=cpu (or auto), or run on a GPU host with a CUDA "
            "build of torch or FAISS's GPU build (pip install 'cairn[gpu]').")


@functools.cache
def resolve_device(setting: str) -> str:
    """``cpu`` (the FAISS CPU path), ``cuda`` or ``torch-cpu`` for a ``DenseConfig.device``.

    Once per process: ``auto`` asks FAISS whether it has GPUs.
    """
    if setting in ("cpu", "torch-cpu"):
        return setting
    if setting == "auto":
        return "cuda" if faiss_gpu_count() > 0 else "cpu"
    if setting == "cuda":
        problem = device_problem(setting)
        if problem:
            raise DenseDeviceUnavailable(problem)
        return "cuda"
    raise ValueError(f"CAIRN_DENSE_DEVICE must be one of {', '.join(DEVICE_CHOICES)}, not {setting!r}")


def resolve_backend(device: str, backend: str) -> str:
    """``faiss`` or ``torch`` for a resolved device (``torch-cpu`` is torch by definition)."""
    if backend not in BACKENDS:
        raise ValueError(f"the dense GPU backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if device == "torch-cpu":
        return "torch"
    if backend == "auto":
        return "faiss" if faiss_gpu_count() > 0 else "torch"
    if backend == "faiss" and faiss_gpu_count() == 0:
        raise DenseDeviceUnavailable("the faiss GPU backend needs FAISS's GPU build and a GPU it sees")
    return backend


def _allowed_rows(mask: np.ndarray, chunk_ids: np.ndarray) -> np.ndarray:
    """``mask[chunk_ids]``, False for ids past the mask's end."""
    keep = np.zeros(len(chunk_ids), bool)
    inside = chunk_ids < len(mask)
    keep[inside] = mask[chunk_ids[inside]]
    return keep


class ExactScan(Protocol):
    """Exact inner-product top-k over a fixed set of rows, each a chunk id."""

    rows: int

    def search(
        self, queries: np.ndarray, k: int, masks: Sequence[np.ndarray | None]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(chunk ids, scores), each ``len(queries) × min(k, rows)``, best first.

        ``masks[i]`` is query i's allowed mask by chunk id (None: all); a
        forbidden row is never returned.  Where fewer rows are allowed than
        asked for, ids are -1 and scores -inf.
        """
        ...


def _empty_results(queries: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((queries, k), -1, np.int64), np.full((queries, k), -np.inf, np.float32)


class TorchExactScan:
    """The rows on a torch device (float32); scores = one matrix product, forbidden rows -inf, ``topk``.

    Thread-safe: searches only read the device tensors.
    """

    def __init__(self, blocks: Iterable[np.ndarray], chunk_ids: np.ndarray, dim: int, device: str) -> None:
        import torch

        self._torch = torch
        self.device = torch.device(device)
        self.rows = len(chunk_ids)
        self.dim = dim
        self.matrix = torch.empty((self.rows, dim), dtype=torch.float32, device=self.device)
        at = 0
        for block in blocks:
            # float16 rows go over as float16 and are widened on the device: exact, and half the copy.
            source = torch.from_numpy(np.ascontiguousarray(block))
            self.matrix[at:at + len(block)] = source.to(self.device).float()
            at += len(block)
        if at != self.rows:
            raise ValueError(f"{at} vectors for {self.rows} ids")
        ids = np.ascontiguousarray(chunk_ids, np.int64)
        self.ids = torch.from_numpy(ids).to(self.device)
        self._id_bound = int(ids.max()) + 1 if len(ids) else 0

    def _row_mask(self, mask: np.ndarray) -> torch.Tensor:
        """The mask by chunk id → one bool per row, on the device."""
        th = self._torch
        size = min(len(mask), self._id_bound)
        upload = th.from_numpy(np.ascontiguousarray(mask[:size], dtype=bool)).to(self.device)
        if size == self._id_bound:
            return upload[self.ids]
        by_id = th.zeros(self._id_bound, dtype=th.bool, device=self.device)  # ids past the mask: forbidden
        by_id[:size] = upload
        return by_id[self.ids]

    def search(
        self, queries: np.ndarray, k: int, masks: Sequence[np.ndarray | None]
    ) -> tuple[np.ndarray, np.ndarray]:
        th = self._torch
        k = min(k, self.rows)
        out_ids, out_scores = _empty_results(len(queries), k)
        if k <= 0:
            return out_ids, out_scores
        step = max(1, min(len(queries), _SCORE_BYTES // (4 * self.rows)))
        row_masks: dict[int, torch.Tensor] = {}  # one upload per distinct mask (a user's batch shares one)
        with th.inference_mode():
            q = th.from_numpy(np.ascontiguousarray(queries, np.float32)).to(self.device)
            for start in range(0, len(queries), step):
                scores = q[start:start + step] @ self.matrix.T
                for i, mask in enumerate(masks[start:start + step]):
                    if mask is None:
                        continue
                    keep = row_masks.get(id(mask))
                    if keep is None:
                        keep = row_masks[id(mask)] = self._row_mask(mask)
                    scores[i].masked_fill_(~keep, -math.inf)
                values, rows = th.topk(scores, k, dim=1)
                found = self.ids[rows].masked_fill_(th.isinf(values), -1)
                out_ids[start:start + step] = found.cpu().numpy()
                out_scores[start:start + step] = values.cpu().numpy()
        return out_ids, out_scores


class FaissExactScan:
    """Exact top-k from a FAISS flat index (``GpuIndexFlatIP`` in service), the mask applied by deepening.

    ``index`` answers ``search(queries, depth)`` with its exact best
    ``depth`` rows; ``rows_vectors`` gives float32 rows for the CPU fallback.
    Searches hold a lock: FAISS's GPU resources are not safe to share
    between threads.
    """

    def __init__(self, index: Any, chunk_ids: np.ndarray, rows_vectors: Callable[[np.ndarray], np.ndarray],
                 *, max_k: int = FAISS_GPU_MAX_K, keep_alive: object = None) -> None:
        self.index = index
        self.ids = np.ascontiguousarray(chunk_ids, np.int64)
        self.rows = len(self.ids)
        self.max_k = max_k
        self._rows_vectors = rows_vectors
        self._keep_alive = keep_alive
        self._lock = threading.Lock()

    def _search(self, queries: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            scores, rows = self.index.search(np.ascontiguousarray(queries, np.float32), depth)
        return scores, rows

    def search(
        self, queries: np.ndarray, k: int, masks: Sequence[np.ndarray | None]
    ) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self.rows)
        out_ids, out_scores = _empty_results(len(queries), k)
        if k <= 0:
            return out_ids, out_scores
        deepest = min(self.rows, self.max_k)
        plain = [i for i, mask in enumerate(masks) if mask is None]
        if plain:
            scores, rows = self._search(queries[plain], min(k, deepest))
            for j, i in enumerate(plain):
                self._fill(out_ids[i], out_scores[i], rows[j], scores[j], None, k)
        pending = [i for i, mask in enumerate(masks) if mask is not None]
        if not pending:
            return out_ids, out_scores
        # First depth from the share allowed (a guess; correctness comes from the check below).
        share = min(int(np.count_nonzero(masks[i])) / self.rows for i in pending)  # type: ignore[arg-type]
        depth = min(deepest, max(2 * k, math.ceil(2 * k / max(share, 1e-9))))
        while pending:
            scores, rows = self._search(queries[pending], depth)
            short = []
            for j, i in enumerate(pending):
                mask = masks[i]
                assert mask is not None
                complete = depth >= self.rows
                if not self._fill(out_ids[i], out_scores[i], rows[j], scores[j], mask, k) and not complete:
                    short.append(i)
            if short and depth >= deepest:
                for i in short:  # the allowed rows are too few for FAISS's GPU k: score them here
                    self._exact_on_host(out_ids[i], out_scores[i], queries[i], masks[i], k)  # type: ignore[arg-type]
                break
            pending, depth = short, min(deepest, depth * 4)
        return out_ids, out_scores

    def _fill(self, out_ids: np.ndarray, out_scores: np.ndarray, rows: np.ndarray, scores: np.ndarray,
              mask: np.ndarray | None, k: int) -> bool:
        """The first k allowed of one query's results into its output row; whether k were allowed."""
        valid = rows >= 0
        chunk_ids, scores = self.ids[rows[valid]], scores[valid]
        if mask is not None:
            keep = _allowed_rows(mask, chunk_ids)
            chunk_ids, scores = chunk_ids[keep], scores[keep]
        taken = min(k, len(chunk_ids))
        out_ids[:taken], out_scores[:taken] = chunk_ids[:taken], scores[:taken]
        out_ids[taken:], out_scores[taken:] = -1, -np.inf
        return taken == k

    def _exact_on_host(self, out_ids: np.ndarray, out_scores: np.ndarray, query: np.ndarray,
                       mask: np.ndarray, k: int) -> None:
        rows = np.flatnonzero(_allowed_rows(mask, self.ids))
        scores = self._rows_vectors(rows) @ np.asarray(query, np.float32) if len(rows) else np.zeros(0, np.float32)
        order = np.argsort(-scores, kind="stable")[:k]
        out_ids[:] = -1
        out_scores[:] = -np.inf
        out_ids[:len(order)], out_scores[:len(order)] = self.ids[rows[order]], scores[order]


def faiss_gpu_flat(blocks: Iterable[np.ndarray], dim: int) -> tuple[Any, Any]:
    """A ``GpuIndexFlatIP`` holding ``blocks`` (float32 on the device: scores match the CPU's), and its resources."""
    gpu: Any = faiss  # the GPU classes exist only in FAISS's GPU build (and in no stubs)
    resources = gpu.StandardGpuResources()
    config = gpu.GpuIndexFlatConfig()
    config.device = 0
    config.useFloat16 = False
    index = gpu.GpuIndexFlatIP(resources, dim, config)
    for block in blocks:
        index.add(np.ascontiguousarray(block, np.float32))
    return index, resources


def exact_scan(blocks: Iterable[np.ndarray], chunk_ids: np.ndarray, dim: int, *, device: str, backend: str,
               rows_vectors: Callable[[np.ndarray], np.ndarray]) -> ExactScan:
    """The scan of these rows for a resolved device (``cuda`` or ``torch-cpu``)."""
    if resolve_backend(device, backend) == "faiss":
        index, resources = faiss_gpu_flat(blocks, dim)
        return FaissExactScan(index, chunk_ids, rows_vectors, keep_alive=resources)
    return TorchExactScan(blocks, chunk_ids, dim, "cpu" if device == "torch-cpu" else "cuda")


T = TypeVar("T")
R = TypeVar("R")


class _Request(Generic[T, R]):
    __slots__ = ("done", "error", "item", "result")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = False
        self.result: R | None = None
        self.error: BaseException | None = None


class SearchBatcher(Generic[T, R]):
    """Runs concurrent calls in batches: ``run(items) -> results`` sees every request waiting at that moment.

    A caller that finds no batch running runs one at once, with whatever is
    queued (often only its own request: no wait is ever added to fill a
    batch); callers arriving meanwhile queue, and the first of them to wake
    after the batch runs the next one.  A failing batch raises in each of
    its callers.
    """

    def __init__(self, run: Callable[[list[T]], list[R]], *, max_batch: int = 256) -> None:
        self._run = run
        self.max_batch = max_batch
        self._queue: list[_Request[T, R]] = []
        self._busy = False
        self._cond = threading.Condition()
        self.batches = 0  # batches run, and requests in them: for tests and benchmarks
        self.requests = 0

    @property
    def waiting(self) -> int:
        """Requests queued behind the batch that is running."""
        with self._cond:
            return len(self._queue)

    def submit(self, item: T) -> R:
        request: _Request[T, R] = _Request(item)
        with self._cond:
            self._queue.append(request)
            while self._busy and not request.done:
                self._cond.wait()
            running = not request.done
            self._busy = self._busy or running
        if running:
            try:
                while not request.done:  # its own request may sit behind more than max_batch others
                    with self._cond:
                        batch = self._queue[:self.max_batch]
                        del self._queue[:self.max_batch]
                    self._run_batch(batch)
                    with self._cond:
                        self._cond.notify_all()
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
        if request.error is not None:
            raise request.error
        return request.result  # type: ignore[return-value]

    def _run_batch(self, batch: list[_Request[T, R]]) -> None:
        try:
            results = self._run([r.item for r in batch])
        except BaseException as exc:  # handed to every caller of the batch, raised there
            for r in batch:
                r.error, r.done = exc, True
            return
        self.batches += 1
        self.requests += len(batch)
        for r, result in zip(batch, results, strict=True):
            r.result, r.done = result, True
