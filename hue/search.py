"""Nearest-neighbour search: exact (blocked matrix products over streamed memory) and Annoy, sharded.

Exact search ranks memory rows m for a query q by the score 2 q.m - ||m||^2 = ||q||^2 - ||q - m||^2
(larger = closer), with true squared norms: memory is stored in float16, so rows are only nearly
unit length, and all-zero rows exist. Among equal scores the smaller global memory id wins, here
and in every merge, so results are deterministic and do not depend on how the memory is sharded.

Memory is an (M, D) array, a FlatIndex (an array held with its squared norms, for repeated
searches), or an iterable of (offset, block) pairs, block an (m, D) array whose rows have global
ids offset .. offset + m - 1: a caller can stream the memory shard by shard from memory-mapped
files. Peak RAM is then one block, the queries, the running top k, three scans
of memory rows (fp32 copies of windows that arrive in pieces or in another dtype; one window
each at the default sizes, 4 MB per 512 dims) and one tile of products per worker (window x
query tile: 16 MB at the defaults).

Annoy indexes are searched shard by shard and merged exactly (merge_topk), with the same tie rule.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Iterator, Union

import numpy as np
import torch

from hue import tensors


@dataclasses.dataclass(frozen=True)
class FlatIndex:
    """Memory rows held in RAM with their squared norms, computed once (as faiss's IndexFlatL2 caches them).

    Searching an array computes every row's norm on each search, one more read of the memory
    (5-6% of a search of 10^5 rows at 512 and 1,920 dims, bench/RESULTS.md); a FlatIndex pays
    it once, at build, and gives the same results bit for bit.
    """

    rows: np.ndarray  # (M, D) float32, C-contiguous
    sq: np.ndarray  # (M,) float32 squared norms

    @classmethod
    def build(cls, memory: np.ndarray) -> "FlatIndex":
        """Hold (M, D) memory as float32 and compute its squared norms."""
        if np.ndim(memory) != 2:
            raise ValueError(f"FlatIndex needs an (M, D) array; got shape {np.shape(memory)}")
        rows = np.ascontiguousarray(memory, dtype=np.float32)  # (M, D)
        return cls(rows, np.einsum("md,md->m", rows, rows))


Memory = Union[np.ndarray, FlatIndex, Iterable[tuple[int, np.ndarray]]]

CPU_WINDOW = 2048  # memory rows per CPU product (AMD EPYC: 1024-4096 within 5%, 2048 fastest; Intel: 4096 within 2%)
GPU_WINDOW = 65536  # memory rows per product on the torch path at most: on a GPU, large products keep it busy
GPU_WINDOW_BYTES = 128 << 20  # and at most this much float32 memory per window (65,536 rows at 512 dims)
NO_ID = -1  # id of a missing neighbour (fewer than k memory rows); its distance is inf
CHUNK = 16  # memory rows per chunk maximum in the top-k pass
RING = 3  # scan buffers: workers run on two while the main thread fills the third
SCAN_SCORES = 2**21  # scores per top-k pass and worker (8 MB): windows are grouped up to this


# --- exact search --------------------------------------------------------------------------------


def exact_search(queries: np.ndarray, memory: Memory, k: int, query_block: int = 2048,
                 memory_block: int | None = None, device: str | None = None, shortlist: bool | None = None,
                 threads: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest memory rows by Euclidean distance: dist (Q, k) float32, idx (Q, k) int64 global ids.

    The memory is cut into windows of `memory_block` rows at fixed global boundaries (multiples of
    `memory_block`), whatever blocks it arrives in, and each window is multiplied once, when
    complete: OpenBLAS's sgemm gives a (query, row) score that depends on the shape of the product
    and on the row's place in it (measured: moving a row by 16 places in a 1024-row product
    changes some of its scores in the last bit; so does cutting the products elsewhere), so only
    fixed windows make results bit-for-bit identical for every split of the memory. Queries go in
    equal tiles of at most `query_block` rows; results do depend on that, never on the memory's
    split or on `threads`.

    On the CPU the products run in fp32 through numpy's OpenBLAS (torch's MKL build runs them
    slower on the AMD CPUs measured, bench/RESULTS.md), one single-threaded product per worker
    thread, `threads` workers (0: every core). On a GPU (torch) they run in fp16 with fp32
    accumulation to shortlist every row whose score, widened by a proven bound on its rounding
    error, can still reach the k best; the shortlist is re-scored in fp32, so the result is the fp32
    search's (a fixed-size bf16 shortlist of 2k + 8 missed true neighbours of near-tied data).
    `shortlist` forces that path on any device (for tests). Fewer than k memory rows leave idx -1
    and dist inf in the last columns.
    """
    if k < 1 or np.ndim(queries) != 2:
        raise ValueError(f"exact_search needs k >= 1 and (Q, D) queries; got k={k}, shape {np.shape(queries)}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    shortlist = dev.type == "cuda" if shortlist is None else shortlist
    queries = np.ascontiguousarray(queries, dtype=np.float32)  # (Q, D)
    if len(queries) == 0:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    window = memory_block or (CPU_WINDOW if dev.type == "cpu" and not shortlist else gpu_window(queries.shape[1]))
    memory, norms = (memory.rows, memory.sq) if isinstance(memory, FlatIndex) else (memory, None)
    if dev.type != "cpu" or shortlist:
        return _search_torch(queries, memory, k, query_block, window, dev, shortlist, norms)
    return _search_cpu(queries, memory, k, query_block, window, threads or _cpu_count(), norms)


def gpu_window(d: int) -> int:
    """Memory rows per product on the torch path: GPU_WINDOW, fewer above 512 dims (a multiple of 1,024).

    Sized in bytes too, so that a window's host buffer and its device copies (fp32 rows, their fp16
    halves, the (query_block, W) scores and keys) stay bounded: at 6,400 dims (flat descriptors)
    65,536 rows were 1.7 GB of host buffer and ~6 GB on the device per window. At least 1,024
    rows, so the 128 MiB holds up to 32,768 dims (a 7 x 7 x 2,048 flat descriptor: 411 MB).
    """
    return max(1024, min(GPU_WINDOW, GPU_WINDOW_BYTES // (4 * d)) // 1024 * 1024)


def _cpu_count() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _blocks(memory: Memory) -> Iterator[tuple[int, np.ndarray]]:
    """(offset, block) pairs of an array (one block) or of a stream (checked)."""
    if isinstance(memory, np.ndarray):
        yield 0, memory
        return
    for offset, block in memory:
        if offset < 0 or np.ndim(block) != 2:
            raise ValueError(f"memory blocks must be (offset >= 0, (m, D) array); got offset {offset}, "
                             f"shape {np.shape(block)}")
        yield int(offset), block


def _windows(memory: Memory, size: int) -> Iterator[tuple[int, list[tuple[int, np.ndarray]]]]:
    """Cut memory into windows [w0, w0 + size) at multiples of size: yields (w0, [(row in window, rows)]).

    A window is yielded once, when all its rows have arrived, or at the end with the rows it has:
    so what goes into each product depends only on which rows exist, never on how the stream
    was cut. An ordered stream holds one open window at a time; rows out of order keep theirs
    open (views of their blocks) until complete.
    """
    open_: dict[int, list[tuple[int, np.ndarray]]] = {}
    for offset, block in _blocks(memory):
        pos = 0
        while pos < len(block):
            g = offset + pos  # global id of the next row
            w0, lo = g - g % size, g % size
            n = min(len(block) - pos, size - lo)
            pieces = open_.setdefault(w0, [])
            if any(lo < a + len(p) and a < lo + n for a, p in pieces):
                raise ValueError(f"memory rows {g}..{g + n - 1} arrive twice; blocks must not overlap")
            pieces.append((lo, block[pos:pos + n]))
            if sum(len(p) for _, p in pieces) == size:
                yield w0, open_.pop(w0)
            pos += n
    for w0 in sorted(open_):
        yield w0, open_[w0]


def _fill(buffer: np.ndarray, pieces: list[tuple[int, np.ndarray]], chunk: int,
          norms: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A window as (rows (W', D) float32, their squared norms (W',), absent rows); buffer (>= W, D) if needed.

    `norms` (the window's rows' squared norms, from a FlatIndex) are used instead of computing them.

    A window that arrives as one whole float32 C-contiguous block is used in place (no copy:
    the copy cost 7% of the search at 1,920 dims); any other window is written into buffer.
    A window missing its last rows (the end of the memory) is cut after its last present row,
    rounded up to a whole chunk: no products on padding there. The caller sets the scores of
    absent rows to -inf after the product (an inf in the rows would meet the zero padding
    inside OpenBLAS's kernels and raise invalid-value warnings).
    """
    end = max(lo + len(p) for lo, p in pieces)
    n_rows = -(-end // chunk) * chunk
    lo, first = pieces[0]
    if (len(pieces) == 1 and lo == 0 and len(first) == n_rows and first.dtype == np.float32
            and first.flags.c_contiguous):
        rows = first  # (W', D) in place
        absent = np.zeros(0, np.int64)
    else:
        rows = buffer[:n_rows]  # (W', D)
        present = np.zeros(n_rows, bool)
        for lo, piece in pieces:
            present[lo:lo + len(piece)] = True
        if not present.all():
            rows[:] = 0
        for lo, piece in pieces:
            rows[lo:lo + len(piece)] = piece  # float16 -> float32 here, one block at a time
        absent = np.flatnonzero(~present)
    if norms is None:
        return rows, np.einsum("md,md->m", rows, rows), absent  # true squared norms
    return rows, np.pad(norms[:n_rows], (0, max(0, n_rows - len(norms)))), absent  # padding rows are zero


def _search_cpu(queries: np.ndarray, memory: Memory, k: int, query_block: int, window: int,
                threads: int, norms: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The CPU path: scans of a few windows outside, query tiles inside, single-threaded sgemm per worker.

    With at least as many tiles as threads, a worker takes any (scan, tile) task whose tile no
    other worker holds (the tile's top lists are its own), so workers stay balanced to within
    one task with no barrier (a barrier per window, or waiting on a busy tile, cost 3-5% with 2
    workers). With fewer tiles (a few hundred queries), every thread is a worker with top lists
    of its own, merged at the end: a two-threaded sgemm left the top-k pass serial and ran 10%
    slower at 512 dims. The products are the same either way, so are the results.
    The main thread fills the next scans into a ring of buffers meanwhile. A scan holds several
    windows because the top-k pass costs something per call and per candidate, and both shrink
    with longer scans.
    """
    n_q, d = queries.shape
    q2 = np.multiply(queries, 2).T.copy()  # (D, Q): 2 q.m - ||m||^2 is the score (x2 is exact)
    height = -(-n_q // -(-n_q // query_block)) if n_q else 1  # equal tiles of at most query_block rows
    tiles = [(a, min(a + height, n_q)) for a in range(0, n_q, height)]
    workers = threads  # each runs single-threaded products
    private = len(tiles) < threads  # then workers keep their own top lists
    per_scan = max(1, SCAN_SCORES // (window * query_block))  # windows per scan
    chunk = next(c for c in (CHUNK, 8, 4, 2, 1) if window % c == 0)  # memory rows per chunk maximum
    ring = [np.empty((per_scan * window, d), np.float32) for _ in range(RING)]  # (S, D) scans, when copied
    scans: dict[int, tuple] = {}
    tops = [_TopLists(n_q, k) for _ in range(workers if private else 1)]
    sched = _Scheduler(len(tiles), exclusive=not private)

    def work(top: _TopLists) -> None:
        scores_buf = np.empty(per_scan * window * height, np.float32)  # reused: no page faults
        while (job := sched.take()) is not None:
            t, j = job
            parts, bounds, sq, chunk_ids, absent = scans[j]
            a, b = tiles[t]
            products = scores_buf[:bounds[-1] * (b - a)].reshape(bounds[-1], b - a)  # (S, B)
            for rows, lo, hi in zip(parts, bounds[:-1], bounds[1:]):  # one product per window
                np.matmul(rows, q2[:, a:b], out=products[lo:hi])  # 2 q.m, same shapes for every split
            products[absent] = -np.inf  # padding of partial windows: never chosen
            _update(products, sq, chunk, chunk_ids, top.best[a:b], top.bar_s[a:b], top.bar_id[a:b])
            sched.done(t, j)

    with _blas_threads(1), ThreadPoolExecutor(workers) as pool:
        running = [pool.submit(sched.guard, work, tops[w % len(tops)]) for w in range(workers)]
        try:
            for j, group in enumerate(_groups(_windows(memory, window), per_scan)):
                sched.wait(j - RING)  # the scan that used this buffer must be done
                scans.pop(j - RING, None)
                buffer, parts, bounds, sqs, absent, chunk_ids = ring[j % RING], [], [0], [], [], []
                for w0, pieces in group:
                    if w0 + window > _LOW32:
                        raise ValueError(f"memory id {w0 + window} does not fit the 32-bit ids of the search keys")
                    rows, sq, missing = _fill(buffer[bounds[-1]:], pieces, chunk,
                                              None if norms is None else norms[w0:w0 + window])
                    parts.append(rows)
                    sqs.append(sq)
                    absent.append(bounds[-1] + missing)
                    chunk_ids.append(w0 + np.arange(0, len(rows), chunk))
                    bounds.append(bounds[-1] + len(rows))
                scans[j] = (parts, bounds, np.concatenate(sqs), np.concatenate(chunk_ids), np.concatenate(absent))
                sched.put(j)
        finally:
            sched.close()
            for f in running:
                f.result()  # a worker's exception surfaces here
    best = tops[0].best if len(tops) == 1 else np.sort(np.concatenate([t.best for t in tops], 1), 1)[:, :k]
    best_s, best_i = _unkey(best)  # (Q, k) each
    return _distances(queries, best_s, best_i), best_i


class _TopLists:
    """Running top k of Q queries as sorted keys, with each list's k-th entry (the bar to beat) apart."""

    def __init__(self, n_q: int, k: int):
        self.best = np.full((n_q, k), _EMPTY, np.uint64)  # (Q, k) keys, best first
        self.bar_s = np.full(n_q, -np.inf, np.float32)  # (Q,) score of the k-th best
        self.bar_id = np.full(n_q, NO_ID, np.int64)  # (Q,) its id; NO_ID while a list is not full


class _Scheduler:
    """Hands out (tile, scan) tasks: any tile with scans waiting (no worker holds it, if exclusive), most first."""

    def __init__(self, n_tiles: int, exclusive: bool = True):
        self.exclusive = exclusive
        self.cond = threading.Condition()
        self.queues = [collections.deque() for _ in range(n_tiles)]  # scans waiting, per tile
        self.busy = [False] * n_tiles
        self.left: dict[int, int] = {}  # tasks not finished, per scan
        self.closed, self.failed = False, False

    def put(self, scan: int) -> None:
        """A new scan: one task per tile."""
        with self.cond:
            self.left[scan] = len(self.queues)
            for q in self.queues:
                q.append(scan)
            self.cond.notify_all()

    def take(self) -> tuple[int, int] | None:
        """Block until a task is free; None once closed and drained (or after a failure)."""
        with self.cond:
            while not self.failed:
                free = [t for t, q in enumerate(self.queues) if q and not (self.exclusive and self.busy[t])]
                if free:
                    t = max(free, key=lambda t: len(self.queues[t]))
                    self.busy[t] = True
                    return t, self.queues[t].popleft()
                if self.closed and not any(self.queues):
                    return None
                self.cond.wait()
            return None

    def done(self, tile: int, scan: int) -> None:
        """A task finished."""
        with self.cond:
            self.busy[tile] = False
            self.left[scan] -= 1
            self.cond.notify_all()

    def wait(self, scan: int) -> None:
        """Block until every task of `scan` is finished (no-op for scans never put)."""
        with self.cond:
            while self.left.get(scan, 0) > 0 and not self.failed:
                self.cond.wait()
            if self.failed:
                raise RuntimeError("a search worker failed")  # its own exception follows from the pool

    def close(self) -> None:
        """No more scans: workers leave once the queues are empty."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def guard(self, fn, *args) -> None:
        """Run a worker; on an exception, stop every worker and the producer, then re-raise."""
        try:
            fn(*args)
        except BaseException:
            with self.cond:
                self.failed = True
                self.cond.notify_all()
            raise


def _groups(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of `size` items (the last may be shorter)."""
    group = []
    for item in items:
        group.append(item)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


@contextlib.contextmanager
def _blas_threads(n: int):
    """Limit the BLAS to n threads while our own workers each run products (no oversubscription)."""
    try:
        from threadpoolctl import threadpool_limits  # comes with scikit-learn
    except ImportError:  # then the BLAS keeps its own count
        yield
        return
    with threadpool_limits(max(1, n), user_api="blas"):
        yield


# Running top lists are uint64 keys: high 32 bits the score, flipped so that a larger score is a
# smaller key, low 32 bits the global id. Ascending key order is then score descending, id
# ascending: the tie rule, with no separate sort key (three-key lexsort cost 9% of the search).
_LOW32 = 0xFFFFFFFF
_EMPTY = np.uint64(np.iinfo(np.uint64).max)  # an empty slot: sorts after every real key


def _key(scores: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """uint64 keys of (score, id) pairs, ids < 2^32; ascending = better first."""
    bits = (scores.astype(np.float32) + np.float32(0)).view(np.uint32)  # + 0 turns -0 into +0: one zero
    up = np.where(bits >> 31, ~bits, bits | np.uint32(0x80000000))  # monotone in the float value
    return ((~up).astype(np.uint64) << np.uint64(32)) | ids.astype(np.uint64)


def _unkey(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores (float32) and ids (int64) back from keys; empty slots give -inf and NO_ID."""
    up = ~(keys >> np.uint64(32)).astype(np.uint32)
    scores = np.where(up >> 31, up & np.uint32(0x7FFFFFFF), ~up).view(np.float32)
    ids = (keys & np.uint64(_LOW32)).astype(np.int64)
    empty = keys == _EMPTY
    if empty.any():
        scores[empty], ids[empty] = -np.inf, NO_ID
    return scores, ids


def _update(products: np.ndarray, sq: np.ndarray, c: int, chunk_ids: np.ndarray, best: np.ndarray,
            bar_s: np.ndarray, bar_id: np.ndarray) -> None:
    """Merge a tile of products 2 q.m (S, B) and the rows' squared norms sq (S,) into the top lists, in place.

    The score of row m is 2 q.m - ||m||^2; best (B, k) holds each query's top keys and bar_s,
    bar_id (B,) its k-th best (the bar to beat; a tie beats it with a smaller id). Rows of the
    tile are memory rows in chunks of c; chunk_ids (S / c,) holds each chunk's first global id.
    One pass takes each chunk's largest product per query (a max over the middle axis runs as
    wide vector ops); that maximum minus the chunk's smallest norm bounds every score of the
    chunk from above, minus its largest norm from below (rounding is monotone, so the bounds hold
    in float32 too), so scores are formed only in chunks whose upper bound reaches the bar, about
    50 per query over a whole search, and no pass subtracts norms from every product (that pass
    cost 3-4% of the search). torch.topk on every score tile cost 20%, and comparing every score
    with the bar (a nonzero and a copy per changed query) 11%.
    """
    n_chunks, n = len(chunk_ids), products.shape[1]
    k = best.shape[1]
    sq_c = sq.reshape(n_chunks, c)  # (C, c)
    top = products.reshape(n_chunks, c, n).max(axis=1)  # (C, B) chunk maxima of 2 q.m
    upper = top - sq_c.min(axis=1)[:, None]  # (C, B) >= every score of the chunk
    s_bar, s_id = bar_s, bar_id
    fresh = np.flatnonzero(bar_id == NO_ID)  # queries whose top list is not full yet
    if len(fresh):  # their bar: the k-th best chunk lower bound (<= the k-th best score of the tile)
        s_bar, s_id = bar_s.copy(), bar_id.copy()
        lower = top[:, fresh] - sq_c.max(axis=1)[:, None]  # (C, F) <= each chunk's best score
        kth = np.partition(lower, n_chunks - k, axis=0)[n_chunks - k] if n_chunks >= k else -np.inf
        s_bar[fresh] = np.maximum(kth, np.finfo(np.float32).min)  # never -inf: absent rows stay out
        s_id[fresh] = np.iinfo(np.int64).max  # ties at the bar all enter; the keys decide
    hit = upper > s_bar  # (C, B)
    ties = np.flatnonzero(s_id > chunk_ids.min())  # queries where an equal score can still win on its id
    if len(ties):
        hit[:, ties] |= (upper[:, ties] == s_bar[ties]) & (chunk_ids[:, None] < s_id[ties])
    ch, q = np.divmod(np.flatnonzero(hit), n)  # hit chunks, chunk-major
    if len(q) == 0:
        return
    # (c, H) the scores of each hit chunk, row by row: each row's addresses ascend (prefetchable)
    row_in_tile = ch * c + np.arange(c)[:, None]  # (c, H)
    vals = np.take(products.ravel(), row_in_tile * n + q) - sq[row_in_tile]  # 2 q.m - ||m||^2
    bar = s_bar[q]
    cand = vals > bar
    if len(ties):
        cand |= (vals == bar) & (chunk_ids[ch] + np.arange(c)[:, None] < s_id[q])
    r, h = np.divmod(np.flatnonzero(cand), len(q))  # candidates: row in chunk, hit chunk
    order = np.argsort(q[h].astype(np.uint16) if n < 2**16 else q[h], kind="stable")  # radix sort by query
    h, r = h[order], r[order]
    row = q[h]  # query of each candidate, ascending
    first = np.concatenate([[True], row[1:] != row[:-1]])
    rows = row[first]  # queries that change
    keys = _key(vals[r, h], chunk_ids[ch[h]] + r)
    merged = _merge_keys(best[rows], np.cumsum(first) - 1, keys)
    best[rows] = merged
    bar_s[rows], bar_id[rows] = _unkey(merged[:, -1])


def _merge_keys(best: np.ndarray, row: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """The k smallest keys per row of (R, k) sorted lists plus loose (row, key) candidates, rows ascending."""
    r, k = best.shape
    counts = np.bincount(row, minlength=r)  # (R,)
    table = np.full((r, k + counts.max()), _EMPTY, np.uint64)  # (R, k + most candidates of a row)
    table[:, :k] = best
    table[row, k + np.arange(len(row)) - (np.cumsum(counts) - counts)[row]] = keys
    table.sort(axis=1)
    return table[:, :k]


def _distances(queries: np.ndarray, best_s: np.ndarray, best_i: np.ndarray) -> np.ndarray:
    """Euclidean distances sqrt(max(0, ||q||^2 - score)); missing neighbours get inf."""
    q_sq = np.einsum("qd,qd->q", queries, queries)  # (Q,)
    dist = np.sqrt(np.maximum(q_sq[:, None] - best_s, 0))  # (Q, k)
    dist[best_i == NO_ID] = np.inf
    return dist.astype(np.float32)


# --- the torch path (GPU; fp16 shortlist with a proven error bound) ---------------------------------

_EMPTY_KEY = torch.iinfo(torch.int64).min  # torch has no uint64 topk: signed keys, larger = better
_LOW = torch.float16  # shortlist products: stores hold fp16, so their rows convert exactly (bf16 would round)
_U_OUT = 2.0**-11  # unit roundoff of the fp16 product's output
_FP16_SAFE = 2.0**14  # norms and |q| |m| below this: no fp16 overflow in inputs or products (max 65504)
_GATHER = 2**27  # fp32 elements per re-rank gather (512 MB); more candidates go in query slices


def _torch_keys(scores: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """One int64 per (score, id) ordered by score, then by smaller id: topk on it is tie-exact."""
    bits = (scores + 0.0).contiguous().view(torch.int32).long()  # float32 bits; + 0.0 makes -0 into +0
    ordered = torch.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)  # monotone in the float value
    keys = (ordered << 32) | (_LOW32 - ids)  # ids < 2^32
    return keys.masked_fill(scores == -np.inf, _EMPTY_KEY)  # absent rows


def _torch_unkey(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores and ids back from _torch_keys; empty keys give -inf and NO_ID."""
    ordered = keys >> 32
    bits = torch.where(ordered >= 0, ordered, ordered ^ 0x7FFFFFFF).int()
    empty = keys == _EMPTY_KEY
    scores = bits.view(torch.float32).masked_fill(empty, -np.inf)
    return scores, (_LOW32 - (keys & _LOW32)).masked_fill(empty, NO_ID)


def _lowered(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (N, D) float32 as fp16, with each row's norm bound max(||x||, ||x~||) (N,) and rounding ||x - x~|| (N,)."""
    low = x.to(_LOW)  # (N, D)
    back = low.float()
    norm = torch.maximum(torch.linalg.vector_norm(x, dim=1), torch.linalg.vector_norm(back, dim=1))
    return low, norm, torch.linalg.vector_norm(x - back, dim=1)


def _fp16_safe(q_norm: float, m_norm: float) -> bool:
    """Whether vectors of these largest norms and their products stay inside fp16's range."""
    return q_norm < _FP16_SAFE and m_norm < _FP16_SAFE and q_norm * m_norm < _FP16_SAFE


def _error_bound(qn: torch.Tensor, qr: torch.Tensor, mn: torch.Tensor, mr: torch.Tensor, msq: torch.Tensor,
                 d: int) -> torch.Tensor:
    """Bound (B, W) on |fp16-product score - fp32 score| for score 2 q.m - ||m||^2.

    q.m - q~.m~ = q.(m - m~) + (q - q~).m~, so input rounding moves the product by at most
    ||q|| ||m - m~|| + ||q - q~|| ||m~|| (zero for rows that were fp16 already). Summing D
    products in fp32 moves each of the two products (fp16 and fp32) by at most D 2^-23 |q| |m|
    (a whole ulp per addition, for accumulators that truncate), the fp16 output by 2^-11 of its
    size plus half its smallest subnormal; the fp32 score arithmetic adds a few ulps.
    """
    nn = qn[:, None] * mn[None]  # (B, W) bounds of |q| |m|
    product = qn[:, None] * mr[None] + qr[:, None] * mn[None] + (2 * d * 2.0**-23 + _U_OUT) * nn + 2.0**-25
    finite = torch.where(torch.isinf(msq), 0, msq)  # absent rows score -inf either way: no inf - inf
    return (2 * product + 2.0**-21 * (nn + finite[None])) * (1 + 2.0**-10)


def _shortlisted(q: torch.Tensor, ql: tuple, mem: torch.Tensor, ml: tuple, msq: torch.Tensor,
                 best: torch.Tensor, w0: int) -> torch.Tensor:
    """Keys (B, S) of every window row that can still be among the k best, scored in fp32.

    fp16 scores +- their error bound give each row an interval; a row whose upper end falls
    below the k-th best lower end (or below the k-th best fp32 score found so far) cannot make
    the top k. The S survivors of the worst-off query, per query, are re-scored in fp32, so the
    result is the fp32 search's whatever the data (near-ties, clusters) and however many survive.
    """
    k = best.shape[1]
    approx = 2 * (ql[0] @ ml[0].T).float() - msq  # (B, W)
    bound = _error_bound(ql[1], ql[2], ml[1], ml[2], msq, q.shape[1])  # (B, W)
    bar = torch.maximum((approx - bound).topk(min(k, approx.shape[1]), dim=1).values[:, -1],
                        _torch_unkey(best[:, -1])[0])  # (B,) the k-th best score is at least this
    upper = approx + bound  # (B, W)
    n_keep = int((upper >= bar[:, None]).sum(1).max())  # host sync: the longest shortlist of the tile
    col = upper.topk(n_keep, dim=1).indices  # (B, S) holds every query's survivors
    step = max(1, _GATHER // max(1, n_keep * q.shape[1]))
    scores = torch.cat([2 * torch.einsum("bd,bsd->bs", q[i:i + step], mem[col[i:i + step]])
                        for i in range(0, len(q), step)]) - msq[col]  # (B, S) fp32
    return _torch_keys(scores, w0 + col)


def _search_torch(queries: np.ndarray, memory: Memory, k: int, query_block: int, window: int,
                  dev: torch.device, shortlist: bool, norms: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Windows of streamed memory on the device: fp32 products, or fp16 ones shortlisting for an fp32 re-rank."""
    n_q, d = queries.shape
    qs = torch.from_numpy(queries).to(dev)  # (Q, D)
    q_low = _lowered(qs) if shortlist else None
    best = torch.full((n_q, k), _EMPTY_KEY, dtype=torch.int64, device=dev)  # (Q, k) keys, best first
    buffer = np.empty((window, d), np.float32)
    for w0, pieces in _windows(memory, window):
        if w0 + window > _LOW32:
            raise ValueError(f"memory id {w0 + window} does not fit the 32-bit ids of the torch path")
        rows, sq, missing = _fill(buffer, pieces, 1, None if norms is None else norms[w0:w0 + window])
        mem = torch.tensor(rows, device=dev)  # (W', D) a copy: rows may be the caller's read-only map
        msq = torch.tensor(sq, device=dev)  # (W',)
        msq[torch.from_numpy(missing).to(dev)] = np.inf  # score -inf: padding of a partial window is never chosen
        m_low = _lowered(mem) if shortlist else None
        fp16 = shortlist and _fp16_safe(float(q_low[1].max()), float(m_low[1].max()))  # else fp32 products
        cols = torch.arange(len(rows), device=dev)
        for a in range(0, n_q, query_block):
            q, top = qs[a:a + query_block], best[a:a + query_block]  # (B, D), (B, k)
            with tensors.exact_fp32():
                if fp16:
                    keys = _shortlisted(q, tuple(t[a:a + query_block] for t in q_low), mem, m_low, msq, top, w0)
                else:
                    keys = _torch_keys(2 * (q @ mem.T) - msq, w0 + cols.expand(len(q), -1))  # (B, W')
            best[a:a + query_block] = torch.cat([top, keys], 1).topk(k, dim=1).values
    best_s, best_i = _torch_unkey(best)
    return _distances(queries, best_s.cpu().numpy(), best_i.cpu().numpy()), best_i.cpu().numpy()  # host sync


# --- merging result lists ----------------------------------------------------------------------


def merge_topk(dists: list[np.ndarray], idxs: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of several (Q, k_i) result lists with disjoint ids: smaller distance, then smaller id.

    Missing entries (idx -1, any dist) sort last; fewer than k entries in all leave -1 / inf.
    """
    dist = np.concatenate([np.asarray(x, np.float32) for x in dists], axis=1)  # (Q, sum k_i)
    idx = np.concatenate([np.asarray(x, np.int64) for x in idxs], axis=1)
    missing = idx < 0
    dist = np.where(missing, np.inf, dist)
    idx = np.where(missing, np.iinfo(np.int64).max, idx)  # so a missing entry loses every tie
    order = np.lexsort((idx, dist))[:, :k]  # (Q, <= k) each row by distance, then id
    dist, idx = np.take_along_axis(dist, order, 1), np.take_along_axis(idx, order, 1)
    idx[idx == np.iinfo(np.int64).max] = NO_ID
    pad = ((0, 0), (0, k - dist.shape[1]))
    return np.pad(dist, pad, constant_values=np.inf), np.pad(idx, pad, constant_values=NO_ID)


# --- Annoy ---------------------------------------------------------------------------------------


def annoy_search(ann, queries: np.ndarray, k: int, search_k: int, threads: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """k approximate neighbours per query from an angular Annoy index: dist (Q, k), idx (Q, k).

    For unit vectors Annoy's angular distance sqrt(2 - 2 cos) is the Euclidean distance.
    Annoy releases the GIL while searching, so threads scale.
    """
    dist = np.full((len(queries), k), np.inf, dtype=np.float32)
    idx = np.full((len(queries), k), -1, dtype=np.int64)

    def one(i: int) -> None:
        items, ds = ann.get_nns_by_vector(queries[i], k, search_k=search_k, include_distances=True)
        idx[i, : len(items)], dist[i, : len(items)] = items, ds

    with ThreadPoolExecutor(max_workers=threads or None) as pool:
        list(pool.map(one, range(len(queries)), chunksize=256))
    return dist, idx


def annoy_search_sharded(shards: list[tuple[object, int]], queries: np.ndarray, k: int, search_k: int,
                         threads: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Search each (Annoy index, offset) shard on its own and merge exactly; ids are offset + item."""
    dists, idxs = [], []
    for ann, offset in shards:
        dist, item = annoy_search(ann, queries, k, search_k, threads)  # (Q, k) each
        dists.append(dist)
        idxs.append(np.where(item >= 0, item + offset, NO_ID))
    if not shards:
        return np.full((len(queries), k), np.inf, np.float32), np.full((len(queries), k), NO_ID, np.int64)
    return merge_topk(dists, idxs, k)


def recall_at_k(approx_idx: np.ndarray, exact_idx: np.ndarray) -> float:
    """Mean share of the exact k neighbours that the approximate search found."""
    if len(exact_idx) == 0:
        return 1.0
    hits = [len(np.intersect1d(a, e)) for a, e in zip(approx_idx, exact_idx)]
    return float(np.mean(hits) / exact_idx.shape[1])
