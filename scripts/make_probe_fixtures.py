#!/usr/bin/env python3
"""Probe-equivalence fixture: a small synthetic feature set and the PyTorch loop's test accuracy
over 10 seeds, for crates/probe-heads/tests/torch_equivalence.rs.

Usage: python3 scripts/make_probe_fixtures.py
Outputs: crates/probe-heads/tests/fixtures/equivalence_features.safetensors
           train_features [N_TRAIN, D] f32, train_labels [N_TRAIN] i64,
           test_features [N_TEST, D] f32, test_labels [N_TEST] i64
           (already standardised with sklearn's StandardScaler fitted on the train split)
         crates/probe-heads/tests/fixtures/torch_equivalence.json
           per-seed test accuracy of the original training loop (nn.Linear / nn.Sequential,
           CrossEntropyLoss, Adam lr 1e-3, DataLoader(batch_size=8, shuffle=True), 100 epochs)
"""
import json
import time
from pathlib import Path

import numpy as np
import sklearn
import torch
import torch.nn as nn
from safetensors.numpy import save_file
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "crates/probe-heads/tests/fixtures"
N_CLASSES, DIM, N_TRAIN_PER_CLASS, N_TEST_PER_CLASS = 20, 64, 30, 20
EPOCHS, BATCH, LR, SEEDS, HIDDEN = 100, 8, 1e-3, list(range(10)), 256


def make_features(seed=0):
    """Each class is a mixture of two Gaussian clusters (so an MLP can beat a linear probe),
    with enough noise that test accuracy is well below 100 %."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((N_CLASSES, 2, DIM)) * 0.8

    def draw(per_class):
        labels = np.repeat(np.arange(N_CLASSES), per_class)
        sub = rng.integers(0, 2, labels.size)
        x = centres[labels, sub] + rng.standard_normal((labels.size, DIM)) * 1.0
        x = x * rng.uniform(0.5, 3.0, DIM) + rng.uniform(-2, 2, DIM)  # unscaled features
        return x.astype(np.float32), labels.astype(np.int64)

    xtr, ytr = draw(N_TRAIN_PER_CLASS)
    xte, yte = draw(N_TEST_PER_CLASS)
    scaler = StandardScaler().fit(xtr)
    return (scaler.transform(xtr).astype(np.float32), ytr,
            scaler.transform(xte).astype(np.float32), yte)


def make_model(kind):
    if kind == "linear":
        return nn.Linear(DIM, N_CLASSES)
    return nn.Sequential(nn.Linear(DIM, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
                         nn.Linear(HIDDEN, N_CLASSES))


def train_eval(kind, seed, xtr, ytr, xte, yte):
    torch.manual_seed(seed)
    model = make_model(kind)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    loader = DataLoader(TensorDataset(torch.from_numpy(xtr), torch.from_numpy(ytr)),
                        batch_size=BATCH, shuffle=True)
    for _ in range(EPOCHS):
        model.train()
        for inputs, labels in loader:
            optimizer.zero_grad()
            loss = criterion(model(inputs), labels)
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(xte)).argmax(dim=1).numpy()
    return float((pred == yte).mean())


def main():
    torch.set_num_threads(1)
    xtr, ytr, xte, yte = make_features()
    OUT.mkdir(parents=True, exist_ok=True)
    save_file({"train_features": xtr, "train_labels": ytr, "test_features": xte,
               "test_labels": yte}, str(OUT / "equivalence_features.safetensors"))
    result = {"torch_version": torch.__version__, "sklearn_version": sklearn.__version__,
              "n_classes": N_CLASSES, "dim": DIM, "n_train": int(ytr.size), "n_test": int(yte.size),
              "epochs": EPOCHS, "batch_size": BATCH, "learning_rate": LR, "hidden": HIDDEN,
              "seeds": SEEDS}
    for kind in ("linear", "mlp"):
        t0 = time.time()
        accs = [train_eval(kind, s, xtr, ytr, xte, yte) for s in SEEDS]
        result[kind] = {"test_accuracy": accs, "mean": float(np.mean(accs)),
                        "std": float(np.std(accs, ddof=1))}
        print(kind, result[kind]["mean"], result[kind]["std"], f"{time.time() - t0:.1f}s", flush=True)
    (OUT / "torch_equivalence.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
