#!/usr/bin/env python3
"""PyTorch side of the probe-training benchmark (scripts/bench_probes.sh runs both sides).

The exact original training loop: nn.Linear / nn.Sequential(Linear, ReLU, Linear, ReLU, Linear),
CrossEntropyLoss, Adam(lr=1e-3), DataLoader(TensorDataset(X, y), batch_size=8, shuffle=True),
torch.set_num_threads(2) by default. Epoch 1 is a warm-up; the per-step time is the mean over
the remaining epochs of (epoch wall time / steps).

Usage:
  python3 scripts/bench_torch_probe.py --write-data FILE   # 2000 x 768, 50 classes, seed 0
  python3 scripts/bench_torch_probe.py --data FILE [--epochs N] [--threads T] [--probe linear|mlp]
Prints one JSON line per probe, like the Rust bench.
"""
import argparse
import json
import time

import numpy as np
import torch
import torch.nn as nn
from safetensors.numpy import load_file, save_file
from torch.utils.data import DataLoader, TensorDataset


def write_data(path, n=2000, dim=768, n_classes=50, seed=0):
    """Gaussian class clusters: features [n, dim] f32, labels [n] i64."""
    rng = np.random.default_rng(seed)
    means = rng.uniform(-1, 1, (n_classes, dim)).astype(np.float32)
    labels = np.arange(n) % n_classes
    features = means[labels] + rng.uniform(-2, 2, (n, dim)).astype(np.float32)
    save_file({"features": features.astype(np.float32), "labels": labels.astype(np.int64)}, path)


def make_model(kind, in_dim, n_classes, hidden=256):
    if kind == "linear":
        return nn.Linear(in_dim, n_classes)
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.ReLU(),
        nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, n_classes),
    )


def bench(kind, X, y, epochs, seed=42):
    torch.manual_seed(seed)
    n_classes = int(y.max()) + 1
    model = make_model(kind, X.shape[1], n_classes)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(X, y), batch_size=8, shuffle=True)
    times, steps = [], []
    for epoch in range(epochs + 1):
        model.train()
        running_loss = 0.0
        n_steps = 0
        t0 = time.perf_counter()
        for inputs, labels in loader:
            optimizer.zero_grad()
            outputs = model(inputs)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
            n_steps += 1
        elapsed = time.perf_counter() - t0
        if epoch > 0:  # epoch 0 is the warm-up
            times.append(elapsed)
            steps.append(n_steps)
    return {
        "impl": "pytorch", "probe": "mlp" if kind == "mlp" else "linear",
        "threads": torch.get_num_threads(),
        "us_per_step": round(sum(times) * 1e6 / sum(steps), 2),
        "steps": sum(steps), "epochs_timed": epochs,
        "final_train_loss": round(running_loss / n_steps, 4),
        "torch": torch.__version__,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data")
    ap.add_argument("--write-data")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--probe", choices=["linear", "mlp"])
    args = ap.parse_args()
    if args.write_data:
        write_data(args.write_data)
        return
    torch.set_num_threads(args.threads)
    data = load_file(args.data)
    X = torch.from_numpy(data["features"])
    y = torch.from_numpy(data["labels"])
    for kind in ("linear", "mlp"):
        if args.probe and args.probe != kind:
            continue
        print(json.dumps(bench(kind, X, y, args.epochs)), flush=True)


if __name__ == "__main__":
    main()
