"""Training throughput (images/s, forward + backward + AdamW step) of every registry model at its default
input size, on this machine's CPU with 2 threads (or CUDA when present).

    python benchmarks/train_throughput.py [--batch 8] [--steps 2] [--min-seconds 2]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from radiolens.models.registry import available_models, create_model, get_architecture


def _rate(step, batch: int, min_seconds: float, min_steps: int, device: str, repeats: int = 3
          ) -> tuple[float, float]:
    """Best of ``repeats`` windows (each >= ``min_steps`` steps and ``min_seconds``) after one warm-up step.

    Best-of-N because the machine is shared: a slow window measures the neighbours, not the model. The
    CPU-time rate (images per CPU-second / threads) is given too; it is inflated by OpenMP threads spinning
    while a sibling thread is descheduled, so it is an upper bound on cost, not a clean measure."""
    step()  # warm-up: allocations, optimizer state, cudnn autotune
    best_wall = best_cpu = 0.0
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        n, t0, c0 = 0, time.perf_counter(), time.process_time()
        while n < min_steps or time.perf_counter() - t0 < min_seconds:
            step()
            n += 1
        if device == "cuda":
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        best_wall = max(best_wall, batch * n / wall)
        best_cpu = max(best_cpu, batch * n / (cpu / torch.get_num_threads()))
    return best_wall, best_cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=2, help="minimum timed steps")
    ap.add_argument("--min-seconds", type=float, default=2.0, help="length of each timing window")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device {device}, {args.threads} threads, batch {args.batch}, load avg {os.getloadavg()[0]:.1f} "
          "(2-core machine shared with other jobs)\n")
    print("| model | input | params (M) | train img/s (wall) | train img/s (CPU-time, 2 threads) | "
          "inference img/s (wall) | inference img/s (CPU-time) |\n|---|---|---|---|---|---|---|")
    for name in available_models():
        size = get_architecture(name).default_input_size
        n_params, train_ips, train_cpu, infer_ips, infer_cpu = _measure(name, size, args, device)
        print(f"| {name} | {size} | {n_params:.1f} | {train_ips:.1f} | {train_cpu:.1f} | {infer_ips:.1f} | "
              f"{infer_cpu:.1f} |", flush=True)


def _measure(name: str, size: int, args, device: str) -> tuple[float, ...]:
    torch.manual_seed(0)
    model = create_model(name, 2).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(args.batch, 1, size, size, device=device)  # throughput only: pixel values do not matter
    y = torch.randint(0, 2, (args.batch,), device=device)

    def train_step() -> None:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    def infer_step() -> None:
        with torch.inference_mode():
            model(x)

    model.train()
    train = _rate(train_step, args.batch, args.min_seconds, args.steps, device)
    model.eval()
    infer = _rate(infer_step, args.batch, args.min_seconds, args.steps, device)
    return sum(p.numel() for p in model.parameters()) / 1e6, *train, *infer

if __name__ == "__main__":
    main()
