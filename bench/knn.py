"""kNN search benchmark: faiss IndexFlatIP vs hue's exact search vs Annoy, same data, one run.

    python bench/knn.py --dims 512,1920       # synthetic clustered unit vectors at each width
    python bench/knn.py                       # digits pixel vectors of fold 0 if extracted, else synthetic
    python bench/knn.py --synthetic 200000 --dims 1920 --queries 20000

Prints queries/s of each, recall@k against faiss, the exact / faiss speed ratio per width, the
CPU's vector extensions and the thread counts. faiss and hue's exact search alternate within
each repeat (so a noisy neighbour slows both alike) and the best of `repeats` counts for each.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np
import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

DIGITS = Path("data/activations/digits/resnet18")
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def real_vectors(store_dir: Path, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """Memory and query pixel vectors of one fold from an activation store."""
    from hue import shards

    store = shards.ActivationStore(store_dir)
    folds = store.images["fold"].to_numpy()
    return store.vectors("pixel", np.flatnonzero(folds != fold)), store.vectors("pixel", np.flatnonzero(folds == fold))


def synthetic(n: int, q: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Clustered unit vectors, non-negative like post-ReLU activations: memory (n, dim), queries (q, dim)."""
    rng = np.random.default_rng(seed)
    centres = np.abs(rng.normal(size=(256, dim)))

    def draw(m):
        x = np.abs(centres[rng.integers(0, 256, m)] + 0.5 * rng.normal(size=(m, dim)))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    return draw(n), draw(q)


def cpu_flags() -> str:
    """Which of the vector extensions that matter here /proc/cpuinfo reports."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown (no /proc/cpuinfo)"
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    return f"{model}; " + " ".join(f"{f}={'yes' if f in flags else 'no'}" for f in CPU_FLAGS)


def threads_line() -> str:
    """Cores and the thread pools of torch, faiss and the BLAS libraries loaded."""
    import faiss
    import torch
    from threadpoolctl import threadpool_info

    blas = ", ".join(f"{p['internal_api']} {p.get('version')} ({Path(p['filepath']).name.split('-')[0]}) "
                     f"{p['num_threads']}" for p in threadpool_info() if p["user_api"] == "blas")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{os.cpu_count()} CPUs, {cores} usable; threads: torch {torch.get_num_threads()}, "
            f"faiss {faiss.omp_get_max_threads()}, hue exact {cores} workers x 1 BLAS thread; BLAS: {blas}")


def best_of(fns: dict, repeats: int) -> tuple[dict, dict]:
    """Best wall time of each function over `repeats` rounds (alternating within a round) and its result."""
    times, outs = {name: [] for name in fns}, {}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            outs[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}, outs


def compare(memory: np.ndarray, query: np.ndarray, k: int, n_trees: int, search_k: list[int], repeats: int,
            annoy: bool) -> float:
    """Print one side-by-side table; return exact / faiss speed."""
    import faiss

    from hue import index, search

    flat = faiss.IndexFlatIP(memory.shape[1])
    flat.add(memory)
    t, out = best_of({"faiss": lambda: flat.search(query, k),
                      "exact": lambda: search.exact_search(query, memory, k, device="cpu")}, repeats)
    ref = out["faiss"][1]
    rows = [("faiss IndexFlatIP", t["faiss"], 1.0),
            ("hue exact (numpy/OpenBLAS fp32, windowed)", t["exact"], search.recall_at_k(out["exact"][1], ref))]
    if annoy:
        start = time.perf_counter()
        ann = index.build_annoy(memory, n_trees, seed=0)
        build = time.perf_counter() - start
        for sk in search_k:
            t_ann, out_ann = best_of({"annoy": lambda: search.annoy_search(ann, query, k, sk)}, repeats)
            rows.append((f"annoy n_trees={n_trees} search_k={sk}", t_ann["annoy"],
                         search.recall_at_k(out_ann["annoy"][1], ref)))
    for name, secs, recall in rows:
        print(f"  {name:44s} {len(query) / secs:9.0f} queries/s  recall@{k} {recall:.4f}  "
              f"{t['exact'] / secs:5.2f}x exact")
    ratio = t["faiss"] / t["exact"]
    print(f"  ratio exact / faiss speed: {ratio:.3f}x (target >= 1.0)")
    if annoy:
        ok = [(t["exact"] / secs, name) for name, secs, recall in rows[2:] if recall >= 0.95]
        gain, name = max(ok) if ok else (0.0, "none reaches recall 0.95")
        print(f"  annoy build {build:.1f} s; ratio annoy / exact speed at recall >= 0.95: {gain:.2f}x ({name})")
    return ratio


@app.command()
def main(store: Path = DIGITS, fold: int = 0, k: int = 10,
         dims: str = typer.Option("", help="comma-separated widths of synthetic vectors, e.g. 512,1920"),
         synthetic_n: int = typer.Option(36_000, "--synthetic", help="synthetic memory rows (digits fold: 35,925)"),
         queries: int = typer.Option(9_000, help="synthetic queries (digits fold: 9,000)"),
         n_trees: int = 20, search_k: list[int] = typer.Option([250, 500, 1000, 2000]), repeats: int = 3,
         annoy: bool = typer.Option(True, help="also build and time Annoy")) -> None:
    """Run the searches side by side and print the ratios."""
    print(f"machine: {platform.machine()}, {cpu_flags()}")
    print(threads_line())
    if not dims and store.exists():
        memory, query = real_vectors(store, fold)
        print(f"data: {store} fold {fold} pixel vectors; memory {memory.shape}, queries {query.shape}, k={k}")
        compare(memory, query, k, n_trees, search_k, repeats, annoy)
        return
    widths = [int(d) for d in (dims or "512,1920").split(",")]
    ratios = {}
    for dim in widths:
        memory, query = synthetic(synthetic_n, queries, dim)
        print(f"data: synthetic clustered unit vectors, {dim} dims; memory {memory.shape}, queries {query.shape}, "
              f"k={k}, best of {repeats}")
        ratios[dim] = compare(memory, query, k, n_trees, search_k, repeats, annoy)
    print("exact / faiss: " + ", ".join(f"{d} dims {r:.3f}x" for d, r in ratios.items()) + " (target >= 1.0)")


if __name__ == "__main__":
    app()
