"""Exact search against brute force (ties, zero rows), bit-identical results for every memory split,
exact merges of sharded result lists, sharded Annoy with global ids, the fp16 shortlist path and its bound."""

import numpy as np
import pytest

from hue import index, search


def brute_force(queries, memory, k):
    """(dist, idx) by float64 distances, ties to the smaller id, -1 / inf past the memory's end."""
    d2 = ((queries[:, None, :].astype(np.float64) - memory[None].astype(np.float64)) ** 2).sum(2)  # (Q, M)
    ids = np.broadcast_to(np.arange(len(memory)), d2.shape)
    idx = np.lexsort((ids, d2))[:, :k]  # per row: distance, then id
    dist = np.sqrt(np.take_along_axis(d2, idx, 1))
    pad = ((0, 0), (0, k - idx.shape[1]))
    return np.pad(dist, pad, constant_values=np.inf), np.pad(idx, pad, constant_values=-1)


def quarter_grid(n, dim, seed):
    """Vectors with entries in {-0.5, 0, 0.5}: every product and norm is exact in fp32, so ties are real."""
    return (np.random.default_rng(seed).integers(-1, 2, (n, dim)) * 0.5).astype(np.float32)


def tied_memory():
    """(300, 8) memory with duplicated rows and all-zero rows."""
    memory = quarter_grid(300, 8, seed=0)
    memory[50:60] = memory[7]  # ten copies of row 7: ties that only the id can break
    memory[::13] = 0  # all-zero rows, as in padded activation maps
    return memory


@pytest.mark.parametrize("shortlist", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_exact_search_equals_brute_force_with_ties_and_zero_rows(shortlist, threads):
    memory, queries = tied_memory(), quarter_grid(40, 8, seed=1)
    queries[:5] = memory[7]  # queries sitting on the duplicated row
    queries[5] = 0  # a query at the origin ties with every zero row
    dist, idx = search.exact_search(queries, memory, 7, query_block=8, memory_block=32, device="cpu",
                                    shortlist=shortlist, threads=threads)
    want_dist, want_idx = brute_force(queries, memory, 7)
    assert dist.dtype == np.float32 and idx.dtype == np.int64 and idx.shape == (40, 7)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_allclose(dist, want_dist, rtol=1e-6, atol=1e-6)
    assert idx[0, :3].tolist() == [7, 50, 51]  # distance 0 three ways: smaller ids first


def test_torch_fp32_path_breaks_ties_like_the_cpu_path():
    # the GPU path without shortlist, run on the CPU: int64 keys make torch's topk tie-exact
    import torch

    memory, queries = tied_memory(), quarter_grid(40, 8, seed=1)
    queries[:5] = memory[7]
    dist, idx = search._search_torch(queries, memory, 7, 8, 32, torch.device("cpu"), False)
    want_dist, want_idx = brute_force(queries, memory, 7)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_allclose(dist, want_dist, rtol=1e-6, atol=1e-6)


def test_norms_are_true_squared_norms_not_assumed_unit():
    # float16 storage leaves rows only nearly unit length; the ranking must use their real norms
    rng = np.random.default_rng(2)
    memory = rng.normal(size=(400, 16))
    memory = (memory / np.linalg.norm(memory, axis=1, keepdims=True)).astype(np.float16).astype(np.float32)
    memory[::9] *= 1.5  # and some far from unit length
    queries = rng.normal(size=(30, 16)).astype(np.float32)
    dist, idx = search.exact_search(queries, memory, 5, query_block=16, memory_block=64, device="cpu")
    want_dist, want_idx = brute_force(queries, memory, 5)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_allclose(dist, want_dist, rtol=1e-5)


def random_memory():
    """(1000, 24) float16 memory, all-zero rows and duplicates: results are not exact numbers here."""
    rng = np.random.default_rng(3)
    memory = rng.normal(size=(1000, 24)).astype(np.float16)
    memory[::17] = 0
    memory[500:520] = memory[3]
    return memory, rng.normal(size=(50, 24)).astype(np.float32)


def shards_of(memory, sizes, order=None):
    """Cut memory into consecutive blocks of the given sizes (cycled); yield (offset, block), in `order`."""
    bounds, start, i = [], 0, 0
    while start < len(memory):
        stop = min(start + sizes[i % len(sizes)], len(memory))
        bounds.append((start, stop))
        start, i = stop, i + 1
    for j in (order(len(bounds)) if order else range(len(bounds))):
        lo, hi = bounds[j]
        yield lo, memory[lo:hi]


def test_a_chunks_largest_product_need_not_be_its_best_score():
    # the top-k pass bounds a chunk by its largest 2 q.m minus its smallest norm: a long row with the
    # largest product next to the true nearest row must not hide it (chunks of 16 rows here)
    rng = np.random.default_rng(3)
    queries = rng.normal(size=(20, 8)).astype(np.float32)
    memory = np.repeat(queries, 16, axis=0) * rng.uniform(0.2, 4.0, size=(320, 1)).astype(np.float32)  # (320, 8)
    memory += rng.normal(scale=0.05, size=memory.shape).astype(np.float32)
    for start in range(0, 320, 16):
        memory[start] = queries[start // 16] * 6  # the largest product of its chunk, far from the query
    dist, idx = search.exact_search(queries, memory, 3, query_block=8, memory_block=64, device="cpu")
    want_dist, want_idx = brute_force(queries, memory, 3)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_allclose(dist, want_dist, atol=1e-4)  # ||q||^2 - score cancels with long rows
    assert not np.isin(idx, np.arange(0, 320, 16)).any()


@pytest.mark.parametrize("sizes, order", [
    ([1000], None), ([1], None), ([7], None), ([64], None), ([100], None), ([333], None),
    ([5, 300, 1, 77, 64, 129], None),  # uneven shards
    ([64], lambda n: range(n - 1, -1, -1)),  # shards streamed backwards
    ([37, 200], lambda n: np.random.default_rng(4).permutation(n)),  # shuffled, straddling windows
])
@pytest.mark.parametrize("threads", [1, 2])
def test_streamed_memory_gives_bit_identical_results(sizes, order, threads):
    memory, queries = random_memory()
    want_dist, want_idx = search.exact_search(queries, memory, 10, query_block=16, memory_block=64, device="cpu")
    dist, idx = search.exact_search(queries, shards_of(memory, sizes, order), 10, query_block=16, memory_block=64,
                                    device="cpu", threads=threads)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_array_equal(dist, want_dist)  # bit for bit, not close


@pytest.mark.parametrize("n", [640, 1000, 7])  # whole windows, a partial last one, fewer rows than a chunk
@pytest.mark.parametrize("shortlist", [False, True])
def test_flat_index_gives_bit_identical_results(n, shortlist):
    memory, queries = random_memory()
    memory = memory[:n].astype(np.float32)
    flat = search.FlatIndex.build(memory)
    assert flat.rows.dtype == np.float32 and flat.sq.shape == (n,)
    for threads in (1, 2):
        want_dist, want_idx = search.exact_search(queries, memory, 10, query_block=16, memory_block=64,
                                                  device="cpu", shortlist=shortlist, threads=threads)
        dist, idx = search.exact_search(queries, flat, 10, query_block=16, memory_block=64, device="cpu",
                                        shortlist=shortlist, threads=threads)
        np.testing.assert_array_equal(idx, want_idx)
        np.testing.assert_array_equal(dist, want_dist)  # the cached norms are the ones each search computes


def test_flat_index_refuses_a_vector():
    with pytest.raises(ValueError, match=r"\(M, D\) array"):
        search.FlatIndex.build(np.zeros(5, np.float32))


def test_streamed_memory_matches_brute_force_ranking():
    memory, queries = random_memory()
    _, idx = search.exact_search(queries, shards_of(memory, [130]), 10, memory_block=256, device="cpu")
    np.testing.assert_array_equal(idx, brute_force(queries, memory.astype(np.float32), 10)[1])


def test_fewer_rows_than_k_and_empty_inputs():
    memory = quarter_grid(3, 4, seed=5)
    dist, idx = search.exact_search(memory[:2], memory, 5, device="cpu")
    assert idx[:, 3:].tolist() == [[-1, -1], [-1, -1]] and np.isinf(dist[:, 3:]).all()
    assert sorted(idx[0, :3]) == [0, 1, 2]
    dist, idx = search.exact_search(memory[:2], [], 2, device="cpu")  # no memory at all
    assert (idx == -1).all() and np.isinf(dist).all()
    dist, idx = search.exact_search(np.zeros((0, 4), np.float32), memory, 2, device="cpu")
    assert dist.shape == idx.shape == (0, 2)


def test_overlapping_blocks_are_refused():
    memory = quarter_grid(20, 4, seed=6)
    with pytest.raises(ValueError, match="arrive twice"):
        search.exact_search(memory, [(0, memory[:10]), (5, memory[:10])], 2, device="cpu")


def test_merge_topk_takes_the_k_best_with_ties_to_the_smaller_id():
    dist_a, idx_a = np.array([[0.1, 0.5, np.inf]]), np.array([[4, 9, -1]])  # list a has only 2 entries
    dist_b, idx_b = np.array([[0.5, 0.7]]), np.array([[2, 3]])
    dist, idx = search.merge_topk([dist_a, dist_b], [idx_a, idx_b], 3)
    assert idx.tolist() == [[4, 2, 9]]  # 0.5 twice: id 2 before id 9
    np.testing.assert_allclose(dist, [[0.1, 0.5, 0.5]])
    dist, idx = search.merge_topk([dist_a], [idx_a], 4)  # fewer entries than k: padded
    assert idx.tolist() == [[4, 9, -1, -1]] and np.isinf(dist[0, 2:]).all()
    # a missing entry never beats a real one, whatever distance it carries
    _, idx = search.merge_topk([np.array([[0.0]]), np.array([[9.0]])], [np.array([[-1]]), np.array([[5]])], 1)
    assert idx.tolist() == [[5]]


def test_merge_topk_of_memory_shards_equals_the_whole_search():
    memory, queries = random_memory()
    whole_dist, whole_idx = search.exact_search(queries, memory, 10, memory_block=64, device="cpu")
    parts = [search.exact_search(queries, [(lo, memory[lo:lo + 300])], 10, memory_block=64, device="cpu")
             for lo in range(0, 1000, 300)]  # windows stay on global boundaries, so scores are identical
    dist, idx = search.merge_topk([d for d, _ in parts], [i for _, i in parts], 10)
    np.testing.assert_array_equal(idx, whole_idx)
    np.testing.assert_array_equal(dist, whole_dist)


def planted(n_shards=3, per_shard=200, n_queries=12, k=5, dim=32, seed=7):
    """Unit memory where each query has k near copies (spread over the shards) and the rest is far."""
    rng = np.random.default_rng(seed)
    unit = lambda x: (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)  # noqa: E731
    memory = unit(rng.normal(size=(n_shards * per_shard, dim)))
    queries = unit(rng.normal(size=(n_queries, dim)))
    near = rng.choice(len(memory), (n_queries, k), replace=False)  # global ids of the planted neighbours
    for q, ids in enumerate(near):
        memory[ids] = unit(queries[q] + 0.02 * rng.normal(size=(k, dim)))
    return memory, queries, near


def test_annoy_search_sharded_finds_planted_neighbours_with_global_ids():
    memory, queries, near = planted()
    shards = [(index.build_annoy(memory[lo:lo + 200], n_trees=10, seed=0), lo) for lo in (0, 200, 400)]
    dist, idx = search.annoy_search_sharded(shards, queries, 5, search_k=2000)
    assert [sorted(r) for r in idx.tolist()] == [sorted(r) for r in near.tolist()]
    _, exact = search.exact_search(queries, memory, 5, device="cpu")
    assert search.recall_at_k(idx, exact) == 1.0
    # angular distance on unit vectors is the Euclidean distance, now of the global rows
    np.testing.assert_allclose(dist[:, 0], np.linalg.norm(queries - memory[idx[:, 0]], axis=1), atol=1e-3)
    assert (np.diff(dist, axis=1) >= 0).all()


def test_annoy_search_sharded_pads_when_shards_hold_fewer_than_k():
    memory, queries, _ = planted(n_shards=2, per_shard=3, n_queries=2, k=2)
    shards = [(index.build_annoy(memory[lo:lo + 3], n_trees=2, seed=0), lo) for lo in (0, 3)]
    dist, idx = search.annoy_search_sharded(shards, queries, 8, search_k=100)
    assert (np.sort(idx[:, :6], axis=1) == np.arange(6)).all() and (idx[:, 6:] == -1).all()
    assert np.isinf(dist[:, 6:]).all()


def test_shortlist_path_agrees_with_exact_on_separated_data():
    memory, queries, near = planted()
    want_dist, want_idx = search.exact_search(queries, memory, 5, device="cpu")
    for memory_block in (None, 64, 100):
        dist, idx = search.exact_search(queries, memory, 5, memory_block=memory_block, device="cpu", shortlist=True)
        np.testing.assert_array_equal(idx, want_idx)
        np.testing.assert_allclose(dist, want_dist, atol=1e-5)
    streamed = search.exact_search(queries, shards_of(memory, [150]), 5, memory_block=64, device="cpu", shortlist=True)
    np.testing.assert_array_equal(streamed[1], want_idx)
    assert [sorted(r) for r in want_idx.tolist()] == [sorted(r) for r in near.tolist()]


def near_tied(n, dim, seed, spread=0.05):
    """Unit vectors, fp16-exact, clustered round one direction: neighbours' scores differ by ~1e-3."""
    rng = np.random.default_rng(seed)
    centre = np.random.default_rng(99).standard_normal(dim)
    x = centre / np.linalg.norm(centre) + spread * rng.standard_normal((n, dim)) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16).astype(np.float32)


def fp64_kth(queries, memory, idx):
    """fp64 distances (Q, k) of the returned ids."""
    return np.sqrt(((queries[:, None].astype(np.float64) - memory[idx].astype(np.float64)) ** 2).sum(2))


@pytest.mark.parametrize("memory_block", [None, 256])
def test_shortlist_finds_the_true_neighbours_of_near_tied_data(memory_block):
    # a fixed bf16 shortlist of 2k + 8 lost a tenth of these (recall 0.88 on real gap descriptors)
    memory, queries = near_tied(2000, 64, seed=0), near_tied(50, 64, seed=1)
    dist, idx = search.exact_search(queries, memory, 10, memory_block=memory_block, device="cpu", shortlist=True)
    want_dist, want_idx = brute_force(queries, memory, 10)
    # same up to fp32 ties: compared as squared distances, the score's own units (scores near ||q||^2 = 1
    # resolve to ~1e-7 in fp32); at distance 0.06 a score gap of 2e-7 is 1.6e-6 in distance, and the
    # Sapphire Rapids CPU ordered two such neighbours the other way round
    np.testing.assert_allclose(fp64_kth(queries, memory, idx) ** 2, want_dist ** 2, atol=1e-6)
    assert search.recall_at_k(idx, want_idx) > 0.99
    np.testing.assert_allclose(dist, want_dist, atol=1e-5)


@pytest.mark.parametrize("dim", [8, 512, 1920])
@pytest.mark.parametrize("fp16_exact", [True, False])
def test_error_bound_holds_for_fp16_products(dim, fp16_exact):
    import torch

    rng = np.random.default_rng(dim)
    q, m = rng.standard_normal((40, dim)), np.maximum(rng.standard_normal((300, dim)) + 1, 0)  # signed, ReLU-like
    q, m = (x / np.linalg.norm(x, axis=1, keepdims=True) * rng.uniform(0.5, 2, (len(x), 1)) for x in (q, m))
    if fp16_exact:
        q, m = q.astype(np.float16), m.astype(np.float16)
    q, m = q.astype(np.float32), m.astype(np.float32)
    msq = torch.from_numpy((m.astype(np.float64) ** 2).sum(1).astype(np.float32))
    ql, ml = search._lowered(torch.from_numpy(q)), search._lowered(torch.from_numpy(m))
    approx = (2 * (ql[0] @ ml[0].T).float() - msq).double().numpy()
    truth = 2 * q.astype(np.float64) @ m.astype(np.float64).T - msq.double().numpy()[None]
    bound = search._error_bound(ql[1], ql[2], ml[1], ml[2], msq, dim).double().numpy()
    assert (np.abs(approx - truth) <= bound).all()
    assert (ql[2] == 0).all() == fp16_exact  # fp16 rows convert exactly: no input term


def test_gpu_window_is_bounded_in_bytes_at_every_dimension():
    assert search.gpu_window(64) == search.gpu_window(512) == search.GPU_WINDOW == 65536  # rows cap below 512
    assert [search.gpu_window(d) for d in (1920, 6400, 10**6)] == [17408, 5120, 1024]
    for d in (8, 512, 777, 1920, 6400, 40000):
        w = search.gpu_window(d)
        assert w % 1024 == 0 and w * d * 4 <= max(search.GPU_WINDOW_BYTES, 1024 * d * 4)


def test_default_torch_window_follows_the_dimension(monkeypatch):
    # a byte budget of 1,024 rows at 64 dims: the 3,000-row memory is searched in three windows
    monkeypatch.setattr(search, "GPU_WINDOW_BYTES", 1024 * 64 * 4)
    seen = []
    windows = search._windows
    monkeypatch.setattr(search, "_windows", lambda memory, size: (seen.append(size), windows(memory, size))[1])
    memory, queries = near_tied(3000, 64, seed=4), near_tied(20, 64, seed=5)
    dist, idx = search.exact_search(queries, memory, 10, device="cpu", shortlist=True)
    assert seen == [1024]
    want_dist, want_idx = brute_force(queries, memory, 10)
    np.testing.assert_allclose(fp64_kth(queries, memory, idx) ** 2, want_dist ** 2, atol=1e-6)
    np.testing.assert_allclose(dist, want_dist, atol=1e-5)


def test_vectors_outside_fp16_range_take_fp32_products():
    memory, queries = near_tied(300, 16, seed=2) * 3e4, near_tied(10, 16, seed=3) * 3e4  # fp16 would overflow
    assert not search._fp16_safe(3e4, 3e4)
    dist, idx = search.exact_search(queries, memory, 5, device="cpu", shortlist=True)
    want_dist, _ = brute_force(queries, memory, 5)
    np.testing.assert_allclose(fp64_kth(queries, memory, idx), want_dist, rtol=1e-5)


def test_recall_at_k_counts_overlap():
    assert search.recall_at_k(np.array([[1, 2, 3, 4]]), np.array([[4, 3, 9, 8]])) == 0.5
    assert search.recall_at_k(np.zeros((0, 3), int), np.zeros((0, 3), int)) == 1.0
