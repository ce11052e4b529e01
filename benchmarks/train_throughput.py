"""Training throughput (images/s, forward + backward + AdamW step) of every registry model at its default
input size, on this machine's CPU with 2 threads (or CUDA when present).

    python benchmarks/train_throughput.py [--batch 4] [--steps 2]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from radiolens.models.registry import MODELS, available_models, create_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device {device}, {args.threads} threads, batch {args.batch}, load avg {os.getloadavg()[0]:.1f} "
          "(2-core machine shared with other jobs)\n")
    print("| model | input | params (M) | train images/s | inference images/s |\n|---|---|---|---|---|")
    for name in available_models():
        size = MODELS[name].default_input_size
        torch.manual_seed(0)
        model = create_model(name, 2).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x = torch.randn(args.batch, 1, size, size, device=device)  # throughput only: pixel values do not matter
        y = torch.randint(0, 2, (args.batch,), device=device)
        model.train()
        for step in range(args.steps + 1):
            if step == 1:  # first step is warm-up (allocations, cudnn autotune)
                if device == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        train_ips = args.batch * args.steps / (time.perf_counter() - t0)
        model.eval()
        with torch.inference_mode():
            model(x)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                model(x)
            if device == "cuda":
                torch.cuda.synchronize()
        infer_ips = args.batch * args.steps / (time.perf_counter() - t0)
        n_params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"| {name} | {size} | {n_params:.1f} | {train_ips:.1f} | {infer_ips:.1f} |", flush=True)
        del model, opt


if __name__ == "__main__":
    main()
