#!/usr/bin/env python3
"""kNN fixture: scikit-learn's KNeighborsClassifier(n_neighbors=10, metric="cosine") on a small
synthetic feature set, for crates/probe-heads/tests/knn.rs.

Usage: python3 scripts/make_knn_fixture.py
Output: crates/probe-heads/tests/fixtures/knn_cosine.safetensors
          train_features [N_TRAIN, D] f32, train_labels [N_TRAIN] i64,
          test_features [N_TEST, D] f32,
          predictions [N_TEST] i64 (clf.predict),
          neighbors [N_TEST, K] i64 (clf.kneighbors, nearest first)
        metadata: sklearn version, k, metric.
The features are unscaled and offset (so cosine and Euclidean neighbours differ), with classes
overlapping enough that votes are often split (ties go to the smallest label in scikit-learn).
"""
from pathlib import Path

import numpy as np
import sklearn
from safetensors.numpy import save_file
from sklearn.neighbors import KNeighborsClassifier

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "crates/probe-heads/tests/fixtures/knn_cosine.safetensors"
N_CLASSES, DIM, N_TRAIN, N_TEST, K = 6, 24, 150, 60, 10


def main():
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((N_CLASSES, DIM))
    ytr = rng.integers(0, N_CLASSES, N_TRAIN)
    yte = rng.integers(0, N_CLASSES, N_TEST)
    scale = rng.uniform(0.5, 3.0, DIM)
    offset = rng.uniform(-1.0, 1.0, DIM)

    def draw(y):
        x = centres[y] + rng.standard_normal((y.size, DIM)) * 1.3
        return (x * scale + offset).astype(np.float32)

    xtr, xte = draw(ytr), draw(yte)
    clf = KNeighborsClassifier(n_neighbors=K, metric="cosine").fit(xtr, ytr)
    pred = clf.predict(xte)
    _, neigh = clf.kneighbors(xte)
    save_file(
        {
            "train_features": xtr,
            "train_labels": ytr.astype(np.int64),
            "test_features": xte,
            "predictions": pred.astype(np.int64),
            "neighbors": neigh.astype(np.int64),
        },
        str(OUT),
        metadata={"sklearn": sklearn.__version__, "k": str(K), "metric": "cosine"},
    )
    print(f"wrote {OUT} (sklearn {sklearn.__version__}); test accuracy {np.mean(pred == yte):.3f}")


if __name__ == "__main__":
    main()
