"""Op-level vs batch-level threads for the extract forward, and whether the thread count moves the maps.

    python bench/forward_threads.py                     # resnet18 to layer3, 80 px, batch 64, bf16 and fp32
    python bench/forward_threads.py --batches 28 --rounds 3

Prints, per precision: whether 1 and 2 intra-op threads give the same maps bit for bit (batches
of 64 and 5), the seconds of one batch at each thread count, and the loop over `batches`
preloaded batches with 2 intra-op threads against two Python threads each running whole
batches single-threaded (the same maps), side by side in each round.
"""

from __future__ import annotations

import os
import platform
import threading
import time

import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def main(backbone: str = "resnet18", layer: str = "layer3", size: int = 80, batch: int = 64, batches: int = 28,
         rounds: int = 3) -> None:
    """Print the equality checks and the timings."""
    import torch

    from hue import extract, models

    cpu = torch.device("cpu")
    model = extract.placed(models.bottleneck(backbone, "random", 0, layer)[0], cpu)
    data = torch.randint(0, 256, (batches * batch, 3, size, size), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(1))  # (N, 3, S, S)
    chunks = list(data.split(batch))
    print(f"{backbone} to {layer} at {size} px, batch {batch}, {batches} batches; machine {platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__}")

    def at(threads: int, fn):
        torch.set_num_threads(threads)
        try:
            return fn()
        finally:
            torch.set_num_threads(2)

    for dtype in (torch.bfloat16, torch.float32):
        name = str(dtype).replace("torch.", "")
        run = lambda x: extract.forward_batch(model, x, cpu, dtype)  # noqa: E731
        for b in (batch, 5):
            same = torch.equal(at(1, lambda: run(data[:b])), at(2, lambda: run(data[:b])))
            print(f"{name}: batch {b}, maps with 1 and 2 threads equal bit for bit: {same}")
        for threads in (2, 1):
            at(threads, lambda: run(chunks[0]))  # warm-up
            start = time.perf_counter()
            at(threads, lambda: [run(chunks[0]) for _ in range(5)])
            print(f"{name}: one batch with {threads} thread(s) {(time.perf_counter() - start) / 5:.3f} s")

        def op_level():
            return [run(x) for x in chunks]

        def batch_level():
            out = [None] * len(chunks)

            def work(first: int) -> None:
                for i in range(first, len(chunks), 2):
                    out[i] = run(chunks[i])
            workers = [threading.Thread(target=work, args=(j,)) for j in range(2)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            return out

        op_level(), at(1, batch_level)  # warm-up
        for r in range(rounds):
            start = time.perf_counter()
            a = op_level()
            mid = time.perf_counter()
            b = at(1, batch_level)
            end = time.perf_counter()
            same = all(torch.equal(x, y) for x, y in zip(a, b))
            print(f"{name} round {r}: 2 intra-op threads {mid - start:.3f} s, 2 x 1 thread {end - mid:.3f} s, "
                  f"ratio {(mid - start) / (end - mid):.2f}x, same maps {same}")


if __name__ == "__main__":
    app()
