"""Cost vs memory size: index build time, query throughput, recall@10 and peak RSS of every search backend.

    python bench/scale.py                                  # dims 512 and 1920, sizes 1e4 .. as far as time allows
    python bench/scale.py --dims 512 --sizes 10000,100000 --queries 500 --repeats 5
    python bench/scale.py --methods exact,faiss --rounds 3 --out exact-vs-faiss   # the two in turn

Synthetic clustered unit vectors (non-negative, like post-ReLU activations) are written once per
(size, dim) to a .npy file; every backend then runs in its own process, so its peak RSS is its
own: hue exact on the CPU with the memory in RAM (a FlatIndex: reading it and its norms is the build), hue
exact streamed from the file shard by shard (the reads count as search time; peak RSS is one
shard), hue exact on the GPU (when one is present), Annoy unsharded and sharded (--shards), and
faiss IndexFlatIP (the peer; it holds the whole memory in RAM). Search times are the median of
--repeats searches in the same process. Recall@10 is against hue exact. A backend is skipped at a
size where its time, extrapolated from the smaller sizes, exceeds --budget seconds.
Writes bench/scale.json and bench/scale.png (log-log) and prints the fitted growth exponents.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
HERE = Path(__file__).parent
K = 10
METHODS = ("exact", "exact_stream", "exact_gpu", "annoy", "annoy_sharded", "faiss")


def clustered(n: int, dim: int, seed: int, out: Path, chunk: int = 100_000) -> None:
    """Write n clustered, non-negative unit vectors (float32) to a .npy file, chunk by chunk."""
    rng = np.random.default_rng(seed)
    centres = np.abs(np.random.default_rng(12345).normal(size=(256, dim))).astype(np.float32)
    arr = np.lib.format.open_memmap(out, mode="w+", dtype=np.float32, shape=(n, dim))
    for i in range(0, n, chunk):
        m = min(chunk, n - i)
        x = np.abs(centres[rng.integers(0, 256, m)] + 0.5 * rng.normal(size=(m, dim)).astype(np.float32))
        arr[i:i + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    arr.flush()
    del arr


def _header(f) -> tuple[int, ...]:
    """The shape in a .npy header; leaves `f` at the first data byte."""
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read(f)[0]


def read_rows(path: str, a: int, b: int) -> np.ndarray:
    """Rows a..b of a float32 .npy file by plain reads (no memory map, whose touched pages would count as RSS)."""
    with open(path, "rb") as f:
        shape = _header(f)
        f.seek(f.tell() + a * shape[1] * 4)
        return np.fromfile(f, dtype=np.float32, count=(b - a) * shape[1]).reshape(b - a, shape[1])


def n_rows(path: str) -> tuple[int, int]:
    """(rows, dim) of a .npy file, from its header."""
    with open(path, "rb") as f:
        return _header(f)


def peak_rss_mb() -> float:
    """This process's peak resident set size (VmHWM: ru_maxrss would carry the parent's peak over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(search, repeats: int) -> tuple[float, list[float], object]:
    """Median seconds of `repeats` calls of search(), every time, and the last result."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = search()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), times, out


def run_method(method: str, memory_path: str, queries_path: str, shards: int, n_trees: int, search_k: int,
               out_idx: str, repeats: int) -> dict:
    """One backend at one size (runs in a fresh process): timings, peak RSS; neighbour ids saved to `out_idx`."""
    from hue import search

    m, dim = n_rows(memory_path)  # the memory stays on disk; each backend reads what it holds
    queries = np.load(queries_path)  # (Q, D)
    build = 0.0
    if method == "exact_stream":  # one shard in RAM at a time; reading counts as search time
        bounds = np.linspace(0, m, shards + 1).astype(int)
        blocks = lambda: ((int(a), read_rows(memory_path, a, b)) for a, b in zip(bounds[:-1], bounds[1:]))  # noqa: E731
        seconds, times, (_, idx) = timed(lambda: search.exact_search(queries, blocks(), K, device="cpu"), repeats)
    elif method in ("exact", "exact_gpu"):  # the memory in RAM with its norms, as faiss's IndexFlatL2 can hold it
        start = time.perf_counter()
        memory = search.FlatIndex.build(read_rows(memory_path, 0, m))
        build = time.perf_counter() - start
        device = "cuda" if method == "exact_gpu" else "cpu"
        if device == "cuda":  # the CUDA context, cuBLAS handle and kernel loading: once per process, not per search
            search.exact_search(queries[:8], memory, K, device=device)
        seconds, times, (_, idx) = timed(lambda: search.exact_search(queries, memory, K, device=device), repeats)
    elif method == "faiss":
        import faiss

        faiss.cvar.distance_compute_blas_threshold = 20  # its BLAS path from 20 queries (1.15's default
        # threshold took 10x longer on 200 queries, its sequential path; at 500 it chose BLAS)
        start = time.perf_counter()
        index = faiss.IndexFlatIP(dim)
        for a in range(0, m, 100_000):
            index.add(read_rows(memory_path, a, min(m, a + 100_000)))
        build = time.perf_counter() - start
        seconds, times, (_, idx) = timed(lambda: index.search(queries, K), repeats)
    else:
        from hue import index as hindex

        parts = 1 if method == "annoy" else shards
        bounds = np.linspace(0, m, parts + 1).astype(int)
        loaded = []
        with tempfile.TemporaryDirectory(dir=Path(memory_path).parent) as tmp:
            start = time.perf_counter()
            for j, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):  # shard by shard: one in RAM at a time
                path = Path(tmp) / f"{j}.ann"
                hindex.build_annoy(read_rows(memory_path, a, b), n_trees, seed=j).save(str(path))
            build = time.perf_counter() - start
            from annoy import AnnoyIndex

            for j, a in enumerate(bounds[:-1]):
                ann = AnnoyIndex(dim, "angular")
                ann.load(str(Path(tmp) / f"{j}.ann"))  # memory-mapped
                loaded.append((ann, int(a)))
            seconds, times, (_, idx) = timed(lambda: search.annoy_search_sharded(loaded, queries, K, search_k), 1)
    np.save(out_idx, idx)
    return {"method": method, "build_seconds": build, "search_seconds": seconds, "search_times": times,
            "queries_per_second": len(queries) / seconds, "peak_rss_mb": peak_rss_mb()}


def _merge_rounds(rows: list[dict], method: str, dim: int, size: int) -> dict:
    """Fold every round of one (method, dim, size) in rows into one row: median search and build times."""
    mine = [r for r in rows if (r["method"], r["dim"], r["size"]) == (method, dim, size)]
    for r in mine:
        rows.remove(r)
    merged = {**mine[-1], "rounds": len(mine), "search_times": [t for r in mine for t in r["search_times"]],
              "search_seconds": float(np.median([r["search_seconds"] for r in mine])),
              "build_seconds": float(np.median([r["build_seconds"] for r in mine])),
              "peak_rss_mb": max(r["peak_rss_mb"] for r in mine)}
    merged["queries_per_second"] = mine[-1]["queries_per_second"] * mine[-1]["search_seconds"] / merged["search_seconds"]
    rows.append(merged)
    return merged


def fit_exponent(sizes: list[int], values: list[float]) -> float | None:
    """Slope of log(value) against log(size): cost ~ size^slope."""
    ok = [(s, v) for s, v in zip(sizes, values) if v and v > 0]
    if len(ok) < 2:
        return None
    x, y = np.log([s for s, _ in ok]), np.log([v for _, v in ok])
    return float(np.polyfit(x, y, 1)[0])


def predicted(rows: list[dict], method: str, dim: int, size: int, key: str) -> float | None:
    """Extrapolate a method's cost at `size` from the sizes already measured (power law)."""
    done = [r for r in rows if r["method"] == method and r["dim"] == dim and r.get(key)]
    if len(done) < 2:
        return done[-1][key] * size / done[-1]["size"] if done else None
    slope = fit_exponent([r["size"] for r in done], [r[key] for r in done])
    last = done[-1]
    return last[key] * (size / last["size"]) ** slope


def plot(rows: list[dict], out: Path) -> None:
    """Log-log panels: build time, query time, recall, peak RSS vs memory size."""
    sys.path.insert(0, str(HERE.parent))
    from hue.plotting import pyplot, save

    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.2))
    keys = (("build_seconds", "index build (s)"), ("search_seconds", "search time, all queries (s)"),
            ("recall_at_10", "recall@10 vs exact"), ("peak_rss_mb", "peak RSS (MB)"))
    dims = sorted({r["dim"] for r in rows})
    colour = {m: f"C{i}" for i, m in enumerate(METHODS)}  # one colour per backend in every panel
    for ax, (key, title) in zip(axes, keys):
        for (method, dim) in sorted({(r["method"], r["dim"]) for r in rows}):
            pts = sorted((r["size"], r[key]) for r in rows if r["method"] == method and r["dim"] == dim
                         and r.get(key) is not None and (r[key] > 0 or key == "recall_at_10"))
            if pts:
                ax.plot(*zip(*pts), marker="o", color=colour[method], linestyle=("-", "--", ":")[dims.index(dim) % 3],
                        label=f"{method} d={dim}")
        ax.set_xscale("log")
        if key != "recall_at_10":
            ax.set_yscale("log")
        ax.set_xlabel("memory vectors")
        ax.set_title(title)
    axes[1].legend(fontsize=7)  # the search panel has every backend (exact_stream has no build time)
    fig.tight_layout()
    save(fig, out)


@app.command()
def main(dims: str = "512,1920", sizes: str = "10000,30000,100000,300000,1000000,3000000", queries: int = 1000,
         shards: int = 4, n_trees: int = 20, search_k: int = 2000, budget: float = 600.0, repeats: int = 3,
         rounds: int = typer.Option(1, help="run the backends in turn this many times (medians over rounds)"),
         methods: str = typer.Option(",".join(METHODS), help="backends to run"),
         out: str = typer.Option("scale", help="bench/<out>.json and bench/<out>.png"),
         worker: str = typer.Option("", hidden=True)) -> None:
    """Measure every backend at every size and dimension; print the table and the growth exponents."""
    if worker:  # one measurement, in its own process
        args = json.loads(worker)
        print(json.dumps(run_method(**args)))
        return
    import torch

    rows = []
    wanted = methods.split(",")
    methods = [m for m in METHODS if m in wanted and (m != "exact_gpu" or torch.cuda.is_available())]
    flags = sorted({f for f in open("/proc/cpuinfo").read().split() if f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16")})
    print(f"machine: {os.cpu_count()} cores, CPU flags {flags}, torch {torch.__version__}, cuda {torch.cuda.is_available()}")
    with tempfile.TemporaryDirectory() as tmp:
        for dim in map(int, dims.split(",")):
            q_path = Path(tmp) / f"q{dim}.npy"
            clustered(queries, dim, 1, q_path)
            for size in map(int, sizes.split(",")):
                if size * dim * 4 > 0.6 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"):
                    print(f"d={dim} M={size}: skipped, {size * dim * 4 / 2**30:.1f} GiB of vectors > 60% of RAM")
                    continue
                m_path = Path(tmp) / f"m{dim}-{size}.npy"
                clustered(size, dim, 0, m_path)
                truth = None
                for method in [m for _ in range(rounds) for m in methods]:  # in turn: drift hits all alike
                    guess = max(filter(None, [predicted(rows, method, dim, size, "search_seconds"),
                                              predicted(rows, method, dim, size, "build_seconds")]), default=0)
                    if guess > budget:
                        print(f"d={dim} M={size} {method}: skipped, extrapolated {guess:.0f} s > --budget {budget:.0f} s")
                        continue
                    idx_path = Path(tmp) / f"idx-{method}.npy"
                    args = {"method": method, "memory_path": str(m_path), "queries_path": str(q_path),
                            "shards": shards, "n_trees": n_trees, "search_k": search_k, "out_idx": str(idx_path),
                            "repeats": repeats}
                    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(args)], capture_output=True,
                                          text=True, env={**os.environ, "PYTHONPATH": str(HERE.parent)})
                    if proc.returncode != 0:
                        print(f"d={dim} M={size} {method}: failed: {proc.stderr.strip().splitlines()[-1:]}")
                        continue
                    r = json.loads(proc.stdout.strip().splitlines()[-1])
                    idx = np.load(idx_path)
                    if method == "exact":
                        truth = idx
                    from hue import search

                    r.update(size=size, dim=dim, recall_at_10=search.recall_at_k(idx, truth) if truth is not None else None)
                    rows.append(r)
                    if rounds > 1:
                        print(f"  round times {method}: {[round(t, 3) for t in r['search_times']]}")
                        r = _merge_rounds(rows, method, dim, size)
                    print(f"d={dim:5d} M={size:8d} {method:14s} build {r['build_seconds']:8.2f} s  search "
                          f"{r['search_seconds']:8.2f} s ({r['queries_per_second']:8.0f} q/s)  recall@10 "
                          f"{r['recall_at_10'] if r['recall_at_10'] is not None else float('nan'):.4f}  "
                          f"peak RSS {r['peak_rss_mb']:8.0f} MB", flush=True)
                m_path.unlink()
    exponents = {}
    for (method, dim) in sorted({(r["method"], r["dim"]) for r in rows}):
        done = [r for r in rows if r["method"] == method and r["dim"] == dim]
        exponents[f"{method} d={dim}"] = {
            key: fit_exponent([r["size"] for r in done], [r[key] for r in done])
            for key in ("build_seconds", "search_seconds", "peak_rss_mb")}
    print("\nfitted growth exponents (cost ~ M^e):")
    for name, e in exponents.items():
        print(f"  {name:22s} " + "  ".join(f"{k} {v:.2f}" if v is not None else f"{k} n/a" for k, v in e.items()))
    for size in sorted({r["size"] for r in rows}):
        for dim in sorted({r["dim"] for r in rows}):
            at = {r["method"]: r for r in rows if r["size"] == size and r["dim"] == dim}
            for ours in ("exact", "exact_stream"):
                if ours in at and "faiss" in at:
                    print(f"{ours} / faiss speed at d={dim} M={size}: "
                          f"{at['faiss']['search_seconds'] / at[ours]['search_seconds']:.2f}x")
    (HERE / f"{out}.json").write_text(json.dumps({"rows": rows, "exponents": exponents}, indent=2) + "\n")
    plot(rows, HERE / f"{out}.png")


if __name__ == "__main__":
    app()
