#!/usr/bin/env python3
"""Checks the plots crate's UMAP against umap-learn on the same features.

For each data set, the features (standardised per column, as `umap.png` gets them) are written
to a safetensors file, embedded by our UMAP (`cargo run --release -p plots --example umap_embed`)
and by umap-learn (`umap.UMAP(n_neighbors=15, min_dist=0.1, random_state=SEED)`), and the script
prints scikit-learn's trustworthiness (k = 10) of both embeddings, their difference, and the
wall time of each embedding alone (umap-learn warmed up first, so numba's compilation is not
counted; ours without reading and writing the files). The bar: ours within 0.02 of umap-learn's
on every set (exit status 1 otherwise).

Data sets (all generated or shipped with scikit-learn; nothing is downloaded):
  mixture-500     500 x 768: 10 classes of unequal spread in a 32-d latent space, mapped to
                  768-d by a random projection and tanh, plus noise (one connected graph)
  mixture-2000    2,000 x 768, 50 classes, the same construction (ESC-50's size)
  separated-500   500 x 768, 10 classes farther apart: a graph of several connected
                  components (umap-learn's multi-component initialisation)
  digits          scikit-learn's handwritten digits, 1,797 x 64 (real data)

`--fixture` instead writes crates/plots/tests/fixtures/umap_reference.json, the expected values
of the crate's parity tests, from umap-learn's own functions on a small set (80 x 6 with
duplicated rows): `find_ab_params`, the exact k nearest neighbours, `smooth_knn_dist`'s sigmas
and rhos, the fuzzy simplicial set, the eigenvalues and eigenvectors of the pruned graph's
normalised Laplacian (numpy's eigh, the values umap-learn's eigsh approximates), and
scikit-learn's trustworthiness of a given embedding of the distinct rows.

Usage: python3 scripts/umap_check.py [--seeds 42,43,44] [--sets mixture-500,...] [--fixture]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import scipy.sparse
from safetensors.numpy import load_file, save_file
from sklearn.datasets import load_digits
from sklearn.manifold import trustworthiness
from sklearn.metrics import pairwise_distances

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "crates", "plots", "tests", "fixtures", "umap_reference.json")
BAR = 0.02


def standardise(x):
    """Per-column zero mean, unit variance; constant columns become 0 (as figures.rs)."""
    x = x.astype(np.float64)
    mean = x.mean(0)
    std = x.std(0)
    scale = np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 0.0)
    return ((x - mean) * scale).astype(np.float32)


def mixture(n, classes, seed, centre_scale=1.0, noise=0.5, dim=768, latent=32):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, latent)) * centre_scale
    spread = rng.uniform(0.5, 2.0, size=classes)
    y = np.arange(n) % classes
    z = centres[y] + rng.normal(size=(n, latent)) * spread[y, None]
    proj = rng.normal(size=(latent, dim)) / np.sqrt(latent)
    x = np.tanh(z @ proj) + noise * rng.normal(size=(n, dim))
    return standardise(x), y


def data_sets():
    return {
        "mixture-500": lambda: mixture(500, 10, seed=500),
        "mixture-2000": lambda: mixture(2000, 50, seed=2000),
        "separated-500": lambda: mixture(500, 10, seed=501, centre_scale=2.0, noise=0.3),
        "digits": lambda: (standardise(load_digits().data), load_digits().target),
    }


def umap_learn(x, seed):
    import umap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = umap.UMAP(n_neighbors=15, min_dist=0.1, random_state=seed)
        start = time.perf_counter()
        e = model.fit_transform(x)
        seconds = time.perf_counter() - start
    components = scipy.sparse.csgraph.connected_components(model.graph_)[0]
    return e, seconds, components


def ours(binary, x, seed, tmp):
    src = os.path.join(tmp, "features.safetensors")
    dst = os.path.join(tmp, "embedding.safetensors")
    save_file({"features": np.ascontiguousarray(x, dtype=np.float32)}, src)
    out = subprocess.run(
        [binary, src, dst, str(seed)], check=True, capture_output=True, text=True
    )
    info = json.loads(out.stdout.strip().splitlines()[-1])
    return load_file(dst)["embedding"], info


def build():
    subprocess.run(
        ["cargo", "build", "--release", "-p", "plots", "--example", "umap_embed"],
        cwd=ROOT,
        check=True,
    )
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "release", "examples", "umap_embed")


def check(args):
    binary = build()
    sets = data_sets()
    names = args.sets.split(",") if args.sets else list(sets)
    seeds = [int(s) for s in args.seeds.split(",")]
    # Warm umap-learn up (numba compiles on the first call).
    umap_learn(np.random.default_rng(0).normal(size=(100, 8)).astype(np.float32), 0)
    import umap

    print(f"umap-learn {umap.__version__}; n_neighbors 15, min_dist 0.1, trustworthiness k = 10")
    print(
        "| set | n x dim | seed | ours | umap-learn | difference | ours s | umap-learn s |"
        " graph components | our init |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            x, _ = sets[name]()
            for seed in seeds:
                e_ours, info = ours(binary, x, seed, tmp)
                e_ref, s_ref, components = umap_learn(x, seed)
                t_ours = trustworthiness(x, e_ours, n_neighbors=10)
                t_ref = trustworthiness(x, e_ref, n_neighbors=10)
                diff = t_ours - t_ref
                if abs(diff) > BAR:
                    failed.append((name, seed))
                print(
                    f"| {name} | {x.shape[0]} x {x.shape[1]} | {seed} | {t_ours:.4f} | "
                    f"{t_ref:.4f} | {diff:+.4f} | {info['seconds']:.2f} | {s_ref:.2f} | "
                    f"{components} | {info['init']} |",
                    flush=True,
                )
    if failed:
        print(f"FAIL: more than {BAR} from umap-learn on {failed}")
        sys.exit(1)
    print(f"PASS: ours within {BAR} of umap-learn's trustworthiness on every set and seed")


def fixture():
    from umap.umap_ import find_ab_params, fuzzy_simplicial_set, nearest_neighbors

    ab = []
    for spread, min_dist in [(1.0, 0.1), (1.0, 0.0), (1.0, 0.5), (2.0, 0.3)]:
        a, b = find_ab_params(spread, min_dist)
        ab.append({"spread": spread, "min_dist": min_dist, "a": float(a), "b": float(b)})

    rng = np.random.default_rng(80)
    centres = rng.normal(size=(3, 6)) * 1.5
    y = np.arange(75) % 3
    x = centres[y] + rng.normal(size=(75, 6))
    x = np.vstack([x, x[[3, 3, 10, 20, 30]]]).astype(np.float32)  # duplicated rows
    n_neighbors = 15
    dmat = pairwise_distances(x)
    rs = np.random.RandomState(42)
    knn_indices, knn_dists, _ = nearest_neighbors(dmat, n_neighbors, "precomputed", {}, False, rs)
    graph, sigmas, rhos = fuzzy_simplicial_set(dmat, n_neighbors, rs, "precomputed")
    graph = graph.tocoo()
    graph.sum_duplicates()
    # The pruning of simplicial_set_embedding (500 epochs) and the normalised Laplacian of
    # spectral_layout.
    pruned = graph.copy()
    pruned.data[pruned.data < pruned.data.max() / 500.0] = 0.0
    pruned.eliminate_zeros()
    components = scipy.sparse.csgraph.connected_components(pruned)[0]
    assert components == 1, "the fixture's graph must be connected"
    w = pruned.toarray().astype(np.float64)
    sqrt_deg = np.sqrt(w.sum(0))
    lap = np.eye(len(w)) - w / sqrt_deg[:, None] / sqrt_deg[None, :]
    values, vectors = np.linalg.eigh(lap)

    # Trustworthiness of a noisy 2-d projection of the 75 distinct rows (duplicates tie, and
    # scikit-learn's argsort breaks ties in no documented order).
    emb = (x[:75, :2] + 0.5 * rng.normal(size=(75, 2))).astype(np.float32)
    tw = {k: float(trustworthiness(x[:75], emb, n_neighbors=k)) for k in (5, 10)}

    out = {
        "generator": "scripts/umap_check.py --fixture",
        "ab": ab,
        "features": x.tolist(),
        "n_neighbors": n_neighbors,
        "knn_indices": knn_indices.tolist(),
        "knn_dists": knn_dists.astype(np.float64).tolist(),
        "sigmas": sigmas.astype(np.float64).tolist(),
        "rhos": rhos.astype(np.float64).tolist(),
        "graph": {
            "rows": graph.row.tolist(),
            "cols": graph.col.tolist(),
            "values": graph.data.astype(np.float64).tolist(),
        },
        "pruned_edges": int(pruned.nnz),
        "laplacian_values": values[1:3].tolist(),
        "laplacian_vectors": vectors[:, 1:3].T.tolist(),
        "embedding": emb.tolist(),
        "trustworthiness": {str(k): v for k, v in tw.items()},
    }
    os.makedirs(os.path.dirname(FIXTURE), exist_ok=True)
    with open(FIXTURE, "w") as f:
        json.dump(out, f)
    print(f"wrote {FIXTURE} ({os.path.getsize(FIXTURE)} bytes)")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="42", help="comma-separated seeds (default 42)")
    p.add_argument("--sets", default="", help="comma-separated data sets (default all)")
    p.add_argument("--fixture", action="store_true", help="write the parity fixture instead")
    args = p.parse_args()
    if args.fixture:
        fixture()
    else:
        check(args)


if __name__ == "__main__":
    main()
