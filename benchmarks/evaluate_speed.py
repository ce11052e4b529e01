"""How long evaluation and the HTML report take as the test set grows (2 CPU threads).

Synthetic logits are fine here: only sizes matter for speed (real-data numbers: evaluate_baselines.py).
Usage: python benchmarks/evaluate_speed.py [--n-bootstrap 1000]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

import numpy as np
import torch

from radiolens.evaluate import evaluate_predictions, write_report


def _logits(task: str, n: int, k: int, rng: np.random.Generator):
    if task == "binary":
        y = rng.integers(0, 2, n)
        return ((2 * y - 1) + rng.normal(0, 1.5, n))[:, None], y
    if task == "multiclass":
        y = rng.integers(0, k, n)
        z = rng.normal(0, 1, (n, k))
        z[np.arange(n), y] += 1.5
        return z, y
    Y = (rng.random((n, k)) < np.linspace(0.02, 0.3, k)).astype(int)
    return (2 * Y - 1) + rng.normal(0, 1.5, (n, k)), Y


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    cases = [("binary", 1, 500), ("binary", 1, 5000), ("binary", 1, 20000), ("multiclass", 3, 5000),
             ("multilabel", 14, 500), ("multilabel", 14, 5000)]
    rows = []
    for task, k, n in cases:
        names = [f"class_{i}" for i in range(k)] if task != "binary" else ["positive"]
        tz, ty = _logits(task, n, k, rng)
        vz, vy = _logits(task, max(n // 4, 200), k, rng)
        t0 = time.perf_counter()
        result = evaluate_predictions(task, names, tz, ty, vz, vy, n_bootstrap=args.n_bootstrap, seed=0)
        t_eval = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as tmp:
            t1 = time.perf_counter()
            paths = write_report(result, tmp, title="speed")
            t_report = time.perf_counter() - t1
            size_kb = paths["html"].stat().st_size / 1024
            json_kb = paths["json"].stat().st_size / 1024
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rows.append((task, k, n, f"{t_eval:.1f}", f"{t_report:.1f}", f"{size_kb:.0f}", f"{json_kb:.0f}",
                     f"{peak_mb:.0f}"))
    header = ("task", "outputs", "n_test", "evaluate s", "report s", "html KiB", "json KiB", "peak RSS MiB (cum.)")
    print(f"n_bootstrap = {args.n_bootstrap}")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(v) for v in row) + " |")


if __name__ == "__main__":
    main()
