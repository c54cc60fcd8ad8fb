//! UMAP (McInnes, Healy & Melville 2018), following umap-learn 0.5's algorithm and defaults for
//! the small data sets a plot needs (umap-learn's "small data" path, below 4,096 points):
//!
//! 1. **exact k nearest neighbours** (Euclidean, each point its own first neighbour, ties by
//!    index), `n_neighbors` 15, truncated to `n - 1` on fewer points;
//! 2. **smooth kNN distances**: per point `ρ` (distance to the nearest distinct neighbour) and
//!    `σ` by binary search so that `Σ_j exp(-(d_j - ρ) / σ) = log2(k)` (64 steps, tolerance
//!    1e-5, floor `1e-3 ×` the mean distance), as `umap_.smooth_knn_dist`;
//! 3. **fuzzy simplicial set**: memberships `exp(-(d - ρ) / σ)` combined by the fuzzy union
//!    `P + Pᵀ - P∘Pᵀ`; edges below `max / n_epochs` dropped;
//! 4. **spectral initialisation**: the two eigenvectors of the normalised Laplacian with the
//!    smallest non-zero eigenvalues ([`crate::eigen`], Lanczos), scaled to ±10 plus `N(0, 1e-4²)`
//!    noise; a graph of several connected components is laid out as umap-learn's
//!    `multi_component_layout` does (components placed by a spectral embedding of their
//!    centroids when there are more than 4, else on ±axes; each component's own spectral
//!    layout scaled to half the distance to its nearest neighbour). Where an eigenvector
//!    computation fails, the layout falls back to uniform random positions in [-10, 10], as
//!    umap-learn does, and [`Umap::init`] says so;
//! 5. **SGD with negative sampling**: `a`, `b` fitted to `min_dist` / `spread` (Levenberg-
//!    Marquardt, like `find_ab_params`), each edge sampled every `max w / w` epochs with 5
//!    negative samples per positive one, gradients clipped to ±4, learning rate falling
//!    linearly from 1, `n_epochs` 500 (200 above 10,000 points), both ends of an edge moved.
//!
//! The SGD runs on one thread and every parallel step (distances, Lanczos) reduces in a fixed
//! order, so the output depends on the seed only, not on the thread count. Random numbers come
//! from ChaCha8 rather than umap-learn's Tausworthe generator, so the layouts differ from
//! umap-learn's point by point while their quality matches (`scripts/umap_check.py` compares
//! trustworthiness on the same features).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::eigen::{laplacian_eigenvectors, Csr};
use crate::{PlotError, Result};

/// UMAP settings; [`Default`] is umap-learn's (`n_neighbors` 15, `min_dist` 0.1, `spread` 1,
/// learning rate 1, 5 negative samples, repulsion 1, local connectivity 1) with seed 42.
#[derive(Debug, Clone, PartialEq)]
pub struct UmapConfig {
    /// Neighbourhood size (each point counted as its own first neighbour, as umap-learn does).
    pub n_neighbors: usize,
    /// Smallest distance between points in the embedding (shapes the `a`, `b` curve).
    pub min_dist: f64,
    /// Scale of the embedded points (with `min_dist`, the `a`, `b` curve).
    pub spread: f64,
    /// SGD epochs; `None`: 500 up to 10,000 points, else 200.
    pub n_epochs: Option<usize>,
    /// Initial SGD learning rate (decays linearly to 0).
    pub learning_rate: f64,
    /// Negative samples per positive sample.
    pub negative_sample_rate: usize,
    /// Weight of the negative samples (umap-learn's `repulsion_strength`, `gamma`).
    pub repulsion_strength: f64,
    /// Nearest neighbours assumed connected at full strength (`ρ` interpolation).
    pub local_connectivity: f64,
    /// Seeds the Lanczos start vector, the initial noise and the negative samples.
    pub seed: u64,
}

impl Default for UmapConfig {
    fn default() -> Self {
        Self {
            n_neighbors: 15,
            min_dist: 0.1,
            spread: 1.0,
            n_epochs: None,
            learning_rate: 1.0,
            negative_sample_rate: 5,
            repulsion_strength: 1.0,
            local_connectivity: 1.0,
            seed: 42,
        }
    }
}

/// How the layout was initialised before the SGD.
#[derive(Debug, Clone, PartialEq)]
pub enum UmapInit {
    /// The spectral layout of the (connected) neighbour graph.
    Spectral,
    /// The graph has several connected components, laid out as umap-learn's
    /// `multi_component_layout` does; `random` of them (too small for a spectral layout, or
    /// whose eigenvector computation failed) got uniform random positions inside their slot.
    Components {
        /// Number of connected components.
        components: usize,
        /// Components laid out at random within their slot.
        random: usize,
    },
    /// Uniform random positions in [-10, 10]: the spectral layout was impossible (`reason`).
    Random {
        /// Why the spectral layout failed.
        reason: String,
    },
}

/// A 2-d UMAP embedding and how it was obtained.
#[derive(Debug, Clone, PartialEq)]
pub struct Umap {
    /// One point per input row.
    pub points: Vec<[f32; 2]>,
    /// How the layout was initialised.
    pub init: UmapInit,
    /// Neighbours used (`min(n_neighbors, n - 1)`, self included).
    pub n_neighbors: usize,
    /// SGD epochs run.
    pub n_epochs: usize,
    /// Edges of the fuzzy graph optimised (each direction counted).
    pub edges: usize,
    /// Fitted curve parameter `a` of `1 / (1 + a d^2b)`.
    pub a: f64,
    /// Fitted curve parameter `b`.
    pub b: f64,
}

/// Embeds the rows of `x` (`[n, dim]` row-major) in 2-d with UMAP (module docs). Deterministic
/// for a seed. Errors on a ragged slice, non-finite values or settings umap-learn also
/// refuses (`n_neighbors < 2`, `min_dist` outside `[0, spread]`, ...). No rows give no
/// points, one row a point at the origin; a graph without edges (all neighbours dropped)
/// gives the random initial layout.
pub fn umap(x: &[f32], dim: usize, cfg: &UmapConfig) -> Result<Umap> {
    validate(cfg)?;
    let n = crate::count_rows(x, dim, "UMAP")?;
    let (a, b) = find_ab_params(cfg.spread, cfg.min_dist);
    let n_epochs = cfg.n_epochs.unwrap_or(if n <= 10_000 { 500 } else { 200 });
    let k = cfg.n_neighbors.min(n.saturating_sub(1));
    let mut out = Umap {
        points: vec![[0.0, 0.0]; n],
        init: UmapInit::Spectral,
        n_neighbors: k,
        n_epochs,
        edges: 0,
        a,
        b,
    };
    if n < 2 {
        return Ok(out);
    }
    let (indices, distances) = nearest_neighbors(x, n, dim, k);
    let (sigmas, rhos) = smooth_knn_dist(&distances, k, cfg.local_connectivity);
    let mut graph = fuzzy_union(n, k, &indices, &distances, &sigmas, &rhos);
    prune(&mut graph, n_epochs);
    out.edges = graph.values.len();

    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let (mut layout, init) = if graph.values.is_empty() {
        (
            uniform(&mut rng, n, 10.0),
            UmapInit::Random {
                reason: "the neighbour graph has no edges".into(),
            },
        )
    } else {
        initial_layout(&graph, x, dim, cfg.seed, &mut rng)
    };
    out.init = init;
    noisy_scale(&mut layout, &mut rng);
    rescale(&mut layout);
    if !graph.values.is_empty() {
        optimize_layout(&mut layout, &graph, n_epochs, a, b, cfg, &mut rng);
    }
    out.points = layout.iter().map(|p| [p[0] as f32, p[1] as f32]).collect();
    Ok(out)
}

fn validate(cfg: &UmapConfig) -> Result<()> {
    let bad = |what: String| Err(PlotError::Input(format!("UMAP: {what}")));
    if cfg.n_neighbors < 2 {
        return bad(format!("n_neighbors {} is below 2", cfg.n_neighbors));
    }
    if !(cfg.spread.is_finite() && cfg.spread > 0.0) {
        return bad(format!("spread {} is not positive", cfg.spread));
    }
    if !(cfg.min_dist.is_finite() && (0.0..=cfg.spread).contains(&cfg.min_dist)) {
        return bad(format!(
            "min_dist {} is outside [0, spread = {}]",
            cfg.min_dist, cfg.spread
        ));
    }
    if cfg.n_epochs == Some(0) {
        return bad("n_epochs is 0".into());
    }
    if !(cfg.learning_rate.is_finite() && cfg.learning_rate > 0.0) {
        return bad(format!(
            "learning_rate {} is not positive",
            cfg.learning_rate
        ));
    }
    if !(cfg.repulsion_strength.is_finite() && cfg.repulsion_strength >= 0.0) {
        return bad(format!(
            "repulsion_strength {} is negative",
            cfg.repulsion_strength
        ));
    }
    if !(cfg.local_connectivity.is_finite() && cfg.local_connectivity >= 0.0) {
        return bad(format!(
            "local_connectivity {} is negative",
            cfg.local_connectivity
        ));
    }
    Ok(())
}

/// Squared Euclidean distance in f64 with eight accumulators (fixed summation order).
fn squared_distance(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0_f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            let d = x[l] - y[l];
            acc[l] += d * d;
        }
    }
    let tail: f64 = ra.iter().zip(rb).map(|(x, y)| (x - y) * (x - y)).sum();
    acc.iter().sum::<f64>() + tail
}

/// Squared Euclidean distance of f32 rows: 16 f32 accumulators (vectorised, fixed summation
/// order, so the same bits on every machine), summed in f64. Relative error about 1e-6, the
/// precision of umap-learn's float32 distance matrix.
fn squared_distance_f32(a: &[f32], b: &[f32]) -> f64 {
    let mut acc = [0.0_f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..16 {
            let d = x[l] - y[l];
            acc[l] += d * d;
        }
    }
    let tail: f64 = ra
        .iter()
        .zip(rb)
        .map(|(x, y)| f64::from(x - y).powi(2))
        .sum();
    acc.iter().map(|&v| f64::from(v)).sum::<f64>() + tail
}

/// Exact `k` nearest neighbours of every row (itself included, ties broken by index, as
/// umap-learn's stable argsort of the distance matrix): `([n, k]` indices, `[n, k]` distances).
fn nearest_neighbors(x: &[f32], n: usize, dim: usize, k: usize) -> (Vec<usize>, Vec<f64>) {
    let rows: Vec<(Vec<usize>, Vec<f64>)> = (0..n)
        .into_par_iter()
        .map(|i| {
            let xi = &x[i * dim..(i + 1) * dim];
            let mut d: Vec<(f64, usize)> = (0..n)
                .map(|j| (squared_distance_f32(xi, &x[j * dim..(j + 1) * dim]), j))
                .collect();
            let by = |p: &(f64, usize), q: &(f64, usize)| p.0.total_cmp(&q.0).then(p.1.cmp(&q.1));
            if k < n {
                d.select_nth_unstable_by(k, by);
                d.truncate(k);
            }
            d.sort_by(by);
            d.iter().map(|&(s, j)| (j, s.sqrt())).unzip()
        })
        .collect();
    let mut indices = Vec::with_capacity(n * k);
    let mut distances = Vec::with_capacity(n * k);
    for (i, d) in rows {
        indices.extend(i);
        distances.extend(d);
    }
    (indices, distances)
}

const SMOOTH_K_TOLERANCE: f64 = 1e-5;
const MIN_K_DIST_SCALE: f64 = 1e-3;

/// umap-learn's `smooth_knn_dist`: per row of `distances` (`[n, k]`, sorted, first column the
/// point itself), `σ` and `ρ`.
pub(crate) fn smooth_knn_dist(
    distances: &[f64],
    k: usize,
    local_connectivity: f64,
) -> (Vec<f64>, Vec<f64>) {
    let n = distances.len() / k.max(1);
    let target = (k as f64).log2();
    let mean_all = distances.iter().sum::<f64>() / distances.len().max(1) as f64;
    (0..n)
        .map(|i| {
            let row = &distances[i * k..(i + 1) * k];
            let non_zero: Vec<f64> = row.iter().copied().filter(|&d| d > 0.0).collect();
            let mut rho = 0.0;
            if non_zero.len() as f64 >= local_connectivity {
                let index = local_connectivity.floor() as usize;
                let interpolation = local_connectivity - index as f64;
                if index > 0 {
                    rho = non_zero[index - 1];
                    if interpolation > SMOOTH_K_TOLERANCE {
                        rho += interpolation * (non_zero[index] - non_zero[index - 1]);
                    }
                } else {
                    rho = interpolation * non_zero[0];
                }
            } else if !non_zero.is_empty() {
                rho = non_zero.iter().copied().fold(f64::MIN, f64::max);
            }
            let (mut lo, mut hi, mut mid) = (0.0_f64, f64::INFINITY, 1.0_f64);
            for _ in 0..64 {
                let psum: f64 = row[1..]
                    .iter()
                    .map(|&d| {
                        let d = d - rho;
                        if d > 0.0 {
                            (-(d / mid)).exp()
                        } else {
                            1.0
                        }
                    })
                    .sum();
                if (psum - target).abs() < SMOOTH_K_TOLERANCE {
                    break;
                }
                if psum > target {
                    hi = mid;
                    mid = (lo + hi) / 2.0;
                } else {
                    lo = mid;
                    if hi.is_infinite() {
                        mid *= 2.0;
                    } else {
                        mid = (lo + hi) / 2.0;
                    }
                }
            }
            let floor = if rho > 0.0 {
                MIN_K_DIST_SCALE * row.iter().sum::<f64>() / k as f64
            } else {
                MIN_K_DIST_SCALE * mean_all
            };
            (mid.max(floor), rho)
        })
        .unzip()
}

/// The fuzzy union `P + Pᵀ - P∘Pᵀ` of the per-point memberships `P` (umap-learn's
/// `compute_membership_strengths` and `fuzzy_simplicial_set` with `set_op_mix_ratio` 1), as a
/// symmetric matrix without zeros.
pub(crate) fn fuzzy_union(
    n: usize,
    k: usize,
    indices: &[usize],
    distances: &[f64],
    sigmas: &[f64],
    rhos: &[f64],
) -> Csr {
    let mut rows: Vec<Vec<(usize, f64)>> = vec![Vec::new(); n];
    let mut cols: Vec<Vec<(usize, f64)>> = vec![Vec::new(); n];
    for i in 0..n {
        for c in 0..k {
            let j = indices[i * k + c];
            let d = distances[i * k + c];
            if j == i {
                continue;
            }
            let v = if d - rhos[i] <= 0.0 || sigmas[i] == 0.0 {
                1.0
            } else {
                (-((d - rhos[i]) / sigmas[i])).exp()
            };
            if v != 0.0 {
                rows[i].push((j, v));
                cols[j].push((i, v));
            }
        }
    }
    let mut indptr = vec![0];
    let mut idx = Vec::new();
    let mut values = Vec::new();
    for i in 0..n {
        let mut p = std::mem::take(&mut rows[i]);
        p.sort_unstable_by_key(|e| e.0);
        let t = &cols[i]; // already in increasing row order
        let (mut u, mut v) = (0, 0);
        while u < p.len() || v < t.len() {
            let (j, w) = match (p.get(u), t.get(v)) {
                (Some(&(ju, a)), Some(&(jv, b))) if ju == jv => {
                    u += 1;
                    v += 1;
                    (ju, a + b - a * b)
                }
                (Some(&(ju, a)), Some(&(jv, _))) if ju < jv => {
                    u += 1;
                    (ju, a)
                }
                (Some(&(ju, a)), None) => {
                    u += 1;
                    (ju, a)
                }
                (_, Some(&(jv, b))) => {
                    v += 1;
                    (jv, b)
                }
                (None, None) => unreachable!("loop condition"),
            };
            if w != 0.0 {
                idx.push(j);
                values.push(w);
            }
        }
        indptr.push(idx.len());
    }
    Csr {
        indptr,
        indices: idx,
        values,
    }
}

/// Drops the edges below `max / n_epochs` (umap-learn's `simplicial_set_embedding`; with 10 or
/// fewer epochs the threshold uses the default 500 / 200).
fn prune(graph: &mut Csr, n_epochs: usize) {
    let max = graph.values.iter().copied().fold(0.0_f64, f64::max);
    let n = graph.rows();
    let epochs = if n_epochs > 10 {
        n_epochs
    } else if n <= 10_000 {
        500
    } else {
        200
    };
    let threshold = max / epochs as f64;
    let mut indptr = vec![0];
    let mut indices = Vec::new();
    let mut values = Vec::new();
    for i in 0..n {
        for (j, w) in graph.row(i) {
            if w >= threshold && w > 0.0 {
                indices.push(j);
                values.push(w);
            }
        }
        indptr.push(indices.len());
    }
    *graph = Csr {
        indptr,
        indices,
        values,
    };
}

/// Connected components (labels in order of each component's smallest vertex, as scipy's
/// `connected_components`).
fn components(graph: &Csr) -> (usize, Vec<usize>) {
    let n = graph.rows();
    let mut label = vec![usize::MAX; n];
    let mut count = 0;
    let mut stack = Vec::new();
    for s in 0..n {
        if label[s] != usize::MAX {
            continue;
        }
        label[s] = count;
        stack.push(s);
        while let Some(v) = stack.pop() {
            for (u, _) in graph.row(v) {
                if label[u] == usize::MAX {
                    label[u] = count;
                    stack.push(u);
                }
            }
        }
        count += 1;
    }
    (count, label)
}

/// The rows and columns `members` of `graph`, renumbered.
fn subgraph(graph: &Csr, members: &[usize], position: &[usize]) -> Csr {
    let mut indptr = vec![0];
    let mut indices = Vec::new();
    let mut values = Vec::new();
    for &v in members {
        for (u, w) in graph.row(v) {
            indices.push(position[u]);
            values.push(w);
        }
        indptr.push(indices.len());
    }
    Csr {
        indptr,
        indices,
        values,
    }
}

fn uniform(rng: &mut ChaCha8Rng, n: usize, half: f64) -> Vec<[f64; 2]> {
    (0..n)
        .map(|_| [rng.random_range(-half..half), rng.random_range(-half..half)])
        .collect()
}

/// Spectral layout of one connected graph, or `Err(reason)`.
fn spectral(graph: &Csr, seed: u64) -> std::result::Result<Vec<[f64; 2]>, String> {
    let pairs = laplacian_eigenvectors(graph, 2, seed)?;
    let [u, v] = [&pairs.vectors[0], &pairs.vectors[1]];
    Ok(u.iter().zip(v).map(|(&a, &b)| [a, b]).collect())
}

/// umap-learn's `spectral_layout`, including `multi_component_layout` for a graph of several
/// components, with its fallback to a random layout.
fn initial_layout(
    graph: &Csr,
    x: &[f32],
    dim: usize,
    seed: u64,
    rng: &mut ChaCha8Rng,
) -> (Vec<[f64; 2]>, UmapInit) {
    let n = graph.rows();
    let (count, label) = components(graph);
    if count == 1 {
        return match spectral(graph, seed) {
            Ok(layout) => (layout, UmapInit::Spectral),
            Err(reason) => (uniform(rng, n, 10.0), UmapInit::Random { reason }),
        };
    }
    let meta = component_layout(count, &label, x, dim, seed, rng);
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); count];
    let mut position = vec![0; n];
    for (v, &l) in label.iter().enumerate() {
        position[v] = members[l].len();
        members[l].push(v);
    }
    let mut layout = vec![[0.0; 2]; n];
    let mut random = 0;
    for (l, m) in members.iter().enumerate() {
        let nearest = meta
            .iter()
            .map(|p| ((p[0] - meta[l][0]).powi(2) + (p[1] - meta[l][1]).powi(2)).sqrt())
            .filter(|&d| d > 0.0)
            .fold(f64::INFINITY, f64::min);
        let range = if nearest.is_finite() {
            nearest / 2.0
        } else {
            1.0
        };
        let local = if m.len() < 4 {
            None
        } else {
            let sub = subgraph(graph, m, &position);
            Some(
                spectral(&sub, seed.wrapping_add(1 + l as u64)).unwrap_or_else(|_| {
                    random += 1;
                    uniform(rng, m.len(), 10.0)
                }),
            )
        };
        match local {
            None => {
                random += 1;
                for (&v, p) in m.iter().zip(uniform(rng, m.len(), range)) {
                    layout[v] = [p[0] + meta[l][0], p[1] + meta[l][1]];
                }
            }
            Some(local) => {
                let max = local
                    .iter()
                    .flat_map(|p| [p[0].abs(), p[1].abs()])
                    .fold(0.0_f64, f64::max);
                let expansion = if max > 0.0 { range / max } else { 0.0 };
                for (&v, p) in m.iter().zip(&local) {
                    layout[v] = [p[0] * expansion + meta[l][0], p[1] * expansion + meta[l][1]];
                }
            }
        }
    }
    (
        layout,
        UmapInit::Components {
            components: count,
            random,
        },
    )
}

/// Positions of the components (umap-learn's `component_layout` and its small-count rule):
/// up to 4 components on `±e_1`, `±e_2`; more, by a spectral embedding (as scikit-learn's
/// `SpectralEmbedding`: eigenvectors divided by `sqrt(degree)`, scaled by their maximum) of
/// the affinity `exp(-d²)` between component centroids; uniform in [0, 10) if that fails.
fn component_layout(
    count: usize,
    label: &[usize],
    x: &[f32],
    dim: usize,
    seed: u64,
    rng: &mut ChaCha8Rng,
) -> Vec<[f64; 2]> {
    if count <= 4 {
        let k = count.div_ceil(2);
        let base: Vec<[f64; 2]> = (0..k)
            .map(|i| if i == 0 { [1.0, 0.0] } else { [0.0, 1.0] })
            .collect();
        return base
            .iter()
            .copied()
            .chain(base.iter().map(|p| [-p[0], -p[1]]))
            .take(count)
            .collect();
    }
    let mut centroids = vec![0.0; count * dim];
    let mut sizes = vec![0usize; count];
    for (v, &l) in label.iter().enumerate() {
        sizes[l] += 1;
        for (c, xv) in centroids[l * dim..(l + 1) * dim]
            .iter_mut()
            .zip(&x[v * dim..(v + 1) * dim])
        {
            *c += f64::from(*xv);
        }
    }
    for l in 0..count {
        centroids[l * dim..(l + 1) * dim]
            .iter_mut()
            .for_each(|c| *c /= sizes[l] as f64);
    }
    let mut indptr = vec![0];
    let mut indices = Vec::new();
    let mut values = Vec::new();
    for l in 0..count {
        for m in 0..count {
            if m == l {
                continue;
            }
            let d2 = squared_distance(
                &centroids[l * dim..(l + 1) * dim],
                &centroids[m * dim..(m + 1) * dim],
            );
            let w = (-d2).exp();
            if w > 0.0 {
                indices.push(m);
                values.push(w);
            }
        }
        indptr.push(indices.len());
    }
    let affinity = Csr {
        indptr,
        indices,
        values,
    };
    let Ok(pairs) = laplacian_eigenvectors(&affinity, 2, seed.wrapping_sub(1)) else {
        return (0..count)
            .map(|_| [rng.random_range(0.0..10.0), rng.random_range(0.0..10.0)])
            .collect();
    };
    let degree: Vec<f64> = (0..count)
        .map(|l| affinity.row(l).map(|(_, w)| w).sum::<f64>())
        .collect();
    let mut meta: Vec<[f64; 2]> = (0..count)
        .map(|l| {
            let dd = if degree[l] > 0.0 {
                degree[l].sqrt()
            } else {
                1.0
            };
            [pairs.vectors[0][l] / dd, pairs.vectors[1][l] / dd]
        })
        .collect();
    for c in 0..2 {
        let big = meta
            .iter()
            .map(|p| p[c])
            .fold(0.0_f64, |m, v| if v.abs() > m.abs() { v } else { m });
        if big < 0.0 {
            meta.iter_mut().for_each(|p| p[c] = -p[c]);
        }
    }
    let max = meta
        .iter()
        .flat_map(|p| [p[0], p[1]])
        .fold(f64::MIN, f64::max);
    if max > 0.0 {
        meta.iter_mut().for_each(|p| {
            p[0] /= max;
            p[1] /= max;
        });
    }
    meta
}

/// umap-learn's `noisy_scale_coords`: largest coordinate 10, plus `N(0, 1e-4²)` noise.
fn noisy_scale(layout: &mut [[f64; 2]], rng: &mut ChaCha8Rng) {
    let max = layout
        .iter()
        .flat_map(|p| [p[0].abs(), p[1].abs()])
        .fold(0.0_f64, f64::max);
    let expansion = if max > 0.0 { 10.0 / max } else { 1.0 };
    for p in layout.iter_mut() {
        for c in p.iter_mut() {
            *c = *c * expansion + 1e-4 * crate::normal(rng);
        }
    }
}

/// Each coordinate to [0, 10], as umap-learn does before the SGD.
fn rescale(layout: &mut [[f64; 2]]) {
    for c in 0..2 {
        let lo = layout.iter().map(|p| p[c]).fold(f64::INFINITY, f64::min);
        let hi = layout
            .iter()
            .map(|p| p[c])
            .fold(f64::NEG_INFINITY, f64::max);
        let range = hi - lo;
        for p in layout.iter_mut() {
            p[c] = if range > 0.0 {
                10.0 * (p[c] - lo) / range
            } else {
                0.0
            };
        }
    }
}

/// umap-learn's `optimize_layout_euclidean` (`move_other`, no densMAP), one thread, edges in
/// row order.
fn optimize_layout(
    layout: &mut [[f64; 2]],
    graph: &Csr,
    n_epochs: usize,
    a: f64,
    b: f64,
    cfg: &UmapConfig,
    rng: &mut ChaCha8Rng,
) {
    let n = layout.len();
    let mut head = Vec::with_capacity(graph.values.len());
    for i in 0..n {
        head.extend(std::iter::repeat_n(
            i,
            graph.indptr[i + 1] - graph.indptr[i],
        ));
    }
    let tail = &graph.indices;
    let max = graph.values.iter().copied().fold(0.0_f64, f64::max);
    let epochs = n_epochs as f64;
    // `make_epochs_per_sample`.
    let per_sample: Vec<f64> = graph
        .values
        .iter()
        .map(|&w| epochs / (epochs * (w / max)))
        .collect();
    let rate = cfg.negative_sample_rate as f64;
    let per_negative: Vec<f64> = per_sample.iter().map(|e| e / rate).collect();
    let mut next_negative = per_negative.clone();
    let mut next_sample = per_sample.clone();
    // The layout and the gradients in f32, as umap-learn (and about twice as fast as f64).
    let mut y: Vec<[f32; 2]> = layout.iter().map(|p| [p[0] as f32, p[1] as f32]).collect();
    let (a, b) = (a as f32, b as f32);
    let gamma = cfg.repulsion_strength as f32;
    let mut alpha = cfg.learning_rate as f32;
    let clip = |v: f32| v.clamp(-4.0, 4.0);
    for epoch in 0..n_epochs {
        let now = epoch as f64;
        for i in 0..per_sample.len() {
            if next_sample[i] > now {
                continue;
            }
            let (j, k) = (head[i], tail[i]);
            let (cur, other) = (y[j], y[k]);
            let d2 = (cur[0] - other[0]).powi(2) + (cur[1] - other[1]).powi(2);
            let coeff = if d2 > 0.0 {
                let pb = d2.powf(b);
                -2.0 * a * b * (pb / d2) / (a * pb + 1.0)
            } else {
                0.0
            };
            for c in 0..2 {
                let g = clip(coeff * (cur[c] - other[c]));
                y[j][c] += g * alpha;
                y[k][c] -= g * alpha;
            }
            next_sample[i] += per_sample[i];
            if cfg.negative_sample_rate == 0 {
                continue;
            }
            let negatives = ((now - next_negative[i]) / per_negative[i]).max(0.0) as usize;
            for _ in 0..negatives {
                let k = rng.random_range(0..n);
                let (cur, other) = (y[j], y[k]);
                let d2 = (cur[0] - other[0]).powi(2) + (cur[1] - other[1]).powi(2);
                if d2 <= 0.0 {
                    continue;
                }
                let coeff = 2.0 * gamma * b / ((0.001 + d2) * (a * d2.powf(b) + 1.0));
                if coeff > 0.0 {
                    for c in 0..2 {
                        y[j][c] += clip(coeff * (cur[c] - other[c])) * alpha;
                    }
                }
            }
            next_negative[i] += negatives as f64 * per_negative[i];
        }
        alpha = (cfg.learning_rate * (1.0 - now / epochs)) as f32;
    }
    for (p, q) in layout.iter_mut().zip(&y) {
        *p = [f64::from(q[0]), f64::from(q[1])];
    }
}

/// `a`, `b` of the curve `1 / (1 + a x^2b)` closest in least squares to `1` below `min_dist`
/// and `exp(-(x - min_dist) / spread)` above, on 300 points of `[0, 3 spread]` (umap-learn's
/// `find_ab_params`, which calls scipy's Levenberg-Marquardt `curve_fit` from `(1, 1)`).
/// `(1.577, 0.895)` for the defaults.
pub fn find_ab_params(spread: f64, min_dist: f64) -> (f64, f64) {
    let xs: Vec<f64> = (0..300).map(|i| spread * 3.0 * i as f64 / 299.0).collect();
    let ys: Vec<f64> = xs
        .iter()
        .map(|&x| {
            if x < min_dist {
                1.0
            } else {
                (-(x - min_dist) / spread).exp()
            }
        })
        .collect();
    let cost = |a: f64, b: f64| -> f64 {
        xs.iter()
            .zip(&ys)
            .map(|(&x, &y)| (1.0 / (1.0 + a * x.powf(2.0 * b)) - y).powi(2))
            .sum()
    };
    let (mut a, mut b) = (1.0_f64, 1.0_f64);
    let mut current = cost(a, b);
    let mut lambda = 1e-3;
    for _ in 0..500 {
        // Normal equations J^T J, J^T r of the residuals r = f - y.
        let (mut h, mut g) = ([[0.0_f64; 2]; 2], [0.0_f64; 2]);
        for (&x, &y) in xs.iter().zip(&ys) {
            let u = if x > 0.0 { x.powf(2.0 * b) } else { 0.0 };
            let f = 1.0 / (1.0 + a * u);
            let ja = -u * f * f;
            let jb = if x > 0.0 {
                -a * u * 2.0 * x.ln() * f * f
            } else {
                0.0
            };
            let r = f - y;
            h[0][0] += ja * ja;
            h[0][1] += ja * jb;
            h[1][1] += jb * jb;
            g[0] += ja * r;
            g[1] += jb * r;
        }
        let mut improved = false;
        while lambda < 1e12 {
            let m00 = h[0][0] * (1.0 + lambda);
            let m11 = h[1][1] * (1.0 + lambda);
            let det = m00 * m11 - h[0][1] * h[0][1];
            if det == 0.0 || !det.is_finite() {
                lambda *= 10.0;
                continue;
            }
            let da = -(m11 * g[0] - h[0][1] * g[1]) / det;
            let db = -(m00 * g[1] - h[0][1] * g[0]) / det;
            let trial = cost(a + da, b + db);
            if trial.is_finite() && trial < current {
                let small =
                    da.abs() <= 1e-12 * (a.abs() + 1e-12) && db.abs() <= 1e-12 * (b.abs() + 1e-12);
                a += da;
                b += db;
                let converged = small || (current - trial) <= 1e-15 * current;
                current = trial;
                lambda = (lambda / 10.0).max(1e-12);
                improved = !converged;
                break;
            }
            lambda *= 10.0;
        }
        if !improved {
            break;
        }
    }
    (a, b)
}

/// Trustworthiness (Venna & Kaski 2001; scikit-learn's `sklearn.manifold.trustworthiness`,
/// Euclidean): 1 minus a penalty for every point among a point's `k` nearest neighbours in
/// the embedding that is not among its `k` nearest in the input, by how far down the input
/// ranking it is. 1 means every embedded neighbourhood is a true one. `x` is `[n, dim]`
/// row-major, `embedding` has `n` points; `k` must be below `n / 2`. O(n² dim).
pub fn trustworthiness(x: &[f32], dim: usize, embedding: &[[f32; 2]], k: usize) -> Result<f64> {
    if dim == 0 || !x.len().is_multiple_of(dim) || x.len() / dim != embedding.len() {
        return Err(PlotError::Input(format!(
            "trustworthiness: {} values in rows of {dim} against {} embedded points",
            x.len(),
            embedding.len()
        )));
    }
    let n = embedding.len();
    if k == 0 || 2 * k >= n {
        return Err(PlotError::Input(format!(
            "trustworthiness: k = {k} must be in 1..{} for {n} points",
            n.div_ceil(2)
        )));
    }
    let xf: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    let penalty: f64 = (0..n)
        .into_par_iter()
        .map(|i| {
            let xi = &xf[i * dim..(i + 1) * dim];
            let mut order: Vec<(f64, usize)> = (0..n)
                .filter(|&j| j != i)
                .map(|j| (squared_distance(xi, &xf[j * dim..(j + 1) * dim]), j))
                .collect();
            order.sort_by(|p, q| p.0.total_cmp(&q.0).then(p.1.cmp(&q.1)));
            let mut rank = vec![0usize; n];
            for (r, &(_, j)) in order.iter().enumerate() {
                rank[j] = r + 1;
            }
            let e = embedding[i];
            let mut near: Vec<(f64, usize)> = (0..n)
                .filter(|&j| j != i)
                .map(|j| {
                    let d0 = f64::from(embedding[j][0] - e[0]);
                    let d1 = f64::from(embedding[j][1] - e[1]);
                    (d0 * d0 + d1 * d1, j)
                })
                .collect();
            near.select_nth_unstable_by(k - 1, |p, q| p.0.total_cmp(&q.0).then(p.1.cmp(&q.1)));
            near[..k]
                .iter()
                .map(|&(_, j)| rank[j].saturating_sub(k) as f64)
                .sum::<f64>()
        })
        .collect::<Vec<f64>>()
        .iter()
        .sum();
    let (nf, kf) = (n as f64, k as f64);
    Ok(1.0 - penalty * 2.0 / (nf * kf * (2.0 * nf - 3.0 * kf - 1.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `classes` Gaussian clusters of `per` points in `dim` dimensions (centres 8 apart on
    /// random axes, unit spread), labels alongside.
    fn mixture(classes: usize, per: usize, dim: usize, seed: u64) -> (Vec<f32>, Vec<usize>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let centres: Vec<Vec<f64>> = (0..classes)
            .map(|_| (0..dim).map(|_| 3.0 * crate::normal(&mut rng)).collect())
            .collect();
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..classes * per {
            let c = i % classes;
            x.extend(
                centres[c]
                    .iter()
                    .map(|m| (m + crate::normal(&mut rng)) as f32),
            );
            y.push(c);
        }
        (x, y)
    }

    #[test]
    fn clusters_separate_and_runs_repeat() {
        let (x, y) = mixture(5, 40, 30, 3);
        let cfg = UmapConfig {
            n_epochs: Some(200),
            ..UmapConfig::default()
        };
        let u = umap(&x, 30, &cfg).unwrap();
        assert_eq!(u.points.len(), 200);
        assert_eq!(u.n_neighbors, 15);
        assert!(matches!(u.init, UmapInit::Components { components: 5, .. }));
        let agree = crate::neighbour_agreement(&u.points, &y);
        assert!(
            agree >= 198,
            "{agree}/200 nearest neighbours in the same cluster"
        );
        let t = trustworthiness(&x, 30, &u.points, 10).unwrap();
        assert!(t > 0.9, "trustworthiness {t}");
        assert_eq!(umap(&x, 30, &cfg).unwrap(), u, "same seed, same layout");
        let other = umap(&x, 30, &UmapConfig { seed: 7, ..cfg }).unwrap();
        assert_ne!(other.points, u.points, "the seed matters");
    }

    #[test]
    fn same_layout_on_one_thread_and_on_four() {
        let (x, _) = mixture(3, 30, 12, 5);
        let cfg = UmapConfig {
            n_epochs: Some(50),
            ..UmapConfig::default()
        };
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| umap(&x, 12, &cfg).unwrap())
        };
        assert_eq!(run(1), run(4));
    }

    #[test]
    fn connected_graph_gets_a_spectral_start() {
        // One elongated cloud: a connected neighbour graph.
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let x: Vec<f32> = (0..150)
            .flat_map(|i| {
                let t = i as f64 / 15.0;
                let mut row = vec![t, t.sin()];
                row.extend((0..6).map(|_| 0.05 * crate::normal(&mut rng)));
                row.into_iter().map(|v| v as f32).collect::<Vec<f32>>()
            })
            .collect();
        let u = umap(&x, 8, &UmapConfig::default()).unwrap();
        assert_eq!(u.init, UmapInit::Spectral);
        assert_eq!(u.n_epochs, 500);
        let t = trustworthiness(&x, 8, &u.points, 10).unwrap();
        assert!(t > 0.95, "trustworthiness {t}");
    }

    #[test]
    fn few_points_duplicates_and_constant_features() {
        let cfg = UmapConfig::default();
        assert!(umap(&[], 3, &cfg).unwrap().points.is_empty());
        assert_eq!(umap(&[1.0, 2.0], 2, &cfg).unwrap().points, vec![[0.0, 0.0]]);
        // Two points: no neighbour besides itself, no edges: the random start.
        let two = umap(&[0.0, 0.0, 1.0, 1.0], 2, &cfg).unwrap();
        assert!(
            matches!(two.init, UmapInit::Random { .. }),
            "{:?}",
            two.init
        );
        // Fewer points than n_neighbors + 1: neighbours truncated to n - 1.
        let (x, _) = mixture(2, 5, 4, 1);
        let small = umap(&x, 4, &cfg).unwrap();
        assert_eq!(small.n_neighbors, 9);
        // Identical points, constant features, and a mix of duplicates.
        let same = umap(&[0.5; 40 * 3], 3, &cfg).unwrap();
        let mut dup = x.clone();
        dup.extend_from_slice(&x);
        let dup = umap(&dup, 4, &cfg).unwrap();
        let zero_column: Vec<f32> = x.chunks(4).flat_map(|r| [r[0], 0.0, r[1], 0.0]).collect();
        let zeros = umap(&zero_column, 4, &cfg).unwrap();
        for u in [&small, &same, &dup, &zeros] {
            assert!(u.points.iter().flatten().all(|v| v.is_finite()));
        }
        assert_eq!(dup.points.len(), 20);
        assert!(umap(&[1.0, 2.0, 3.0], 2, &cfg).is_err(), "ragged");
        assert!(umap(&[f32::NAN, 0.0], 1, &cfg).is_err());
        for bad in [
            UmapConfig {
                n_neighbors: 1,
                ..cfg.clone()
            },
            UmapConfig {
                min_dist: 2.0,
                ..cfg.clone()
            },
            UmapConfig {
                n_epochs: Some(0),
                ..cfg.clone()
            },
            UmapConfig {
                learning_rate: f64::NAN,
                ..cfg.clone()
            },
        ] {
            let e = umap(&x, 4, &bad).unwrap_err().to_string();
            assert!(e.contains("UMAP"), "{e}");
        }
    }

    /// Expected values from umap-learn's and scikit-learn's own functions
    /// (`scripts/umap_check.py --fixture`): 80 points in 6-d with duplicated rows.
    #[test]
    fn matches_umap_learn_step_by_step() {
        let f: serde_json::Value =
            serde_json::from_str(include_str!("../tests/fixtures/umap_reference.json")).unwrap();
        let floats = |v: &serde_json::Value| -> Vec<f64> {
            v.as_array()
                .unwrap()
                .iter()
                .flat_map(|r| match r.as_array() {
                    Some(row) => row.iter().map(|x| x.as_f64().unwrap()).collect(),
                    None => vec![r.as_f64().unwrap()],
                })
                .collect()
        };
        for case in f["ab"].as_array().unwrap() {
            let (a, b) = find_ab_params(
                case["spread"].as_f64().unwrap(),
                case["min_dist"].as_f64().unwrap(),
            );
            let (ea, eb) = (case["a"].as_f64().unwrap(), case["b"].as_f64().unwrap());
            assert!(
                (a - ea).abs() < 1e-5 * ea && (b - eb).abs() < 1e-5 * eb,
                "{case}: {a} {b}"
            );
        }
        let x: Vec<f32> = floats(&f["features"]).iter().map(|&v| v as f32).collect();
        let (dim, k) = (6, f["n_neighbors"].as_u64().unwrap() as usize);
        let n = x.len() / dim;
        let (indices, distances) = nearest_neighbors(&x, n, dim, k);
        let expected: Vec<usize> = floats(&f["knn_indices"])
            .iter()
            .map(|&v| v as usize)
            .collect();
        assert_eq!(indices, expected, "neighbours and their order");
        for (d, e) in distances.iter().zip(floats(&f["knn_dists"])) {
            assert!((d - e).abs() < 1e-5 * (1.0 + e), "{d} vs {e}");
        }
        let (sigmas, rhos) = smooth_knn_dist(&distances, k, 1.0);
        for (s, e) in sigmas.iter().zip(floats(&f["sigmas"])) {
            assert!((s - e).abs() < 1e-4 * e, "sigma {s} vs {e}");
        }
        for (r, e) in rhos.iter().zip(floats(&f["rhos"])) {
            assert!((r - e).abs() < 1e-5 * (1.0 + e), "rho {r} vs {e}");
        }
        let mut graph = fuzzy_union(n, k, &indices, &distances, &sigmas, &rhos);
        let g = &f["graph"];
        let (rows, cols, values) = (floats(&g["rows"]), floats(&g["cols"]), floats(&g["values"]));
        assert_eq!(graph.values.len(), values.len(), "edges of the fuzzy union");
        for ((&r, &c), &v) in rows.iter().zip(&cols).zip(&values) {
            let w = graph
                .row(r as usize)
                .find(|&(j, _)| j == c as usize)
                .map(|(_, w)| w)
                .unwrap_or_else(|| panic!("edge {r}-{c} missing"));
            assert!((w - v).abs() < 1e-5, "edge {r}-{c}: {w} vs {v}");
        }
        prune(&mut graph, 500);
        assert_eq!(
            graph.values.len() as u64,
            f["pruned_edges"].as_u64().unwrap()
        );
        let pairs = laplacian_eigenvectors(&graph, 2, 42).unwrap();
        let ev = floats(&f["laplacian_values"]);
        let vectors = floats(&f["laplacian_vectors"]);
        for i in 0..2 {
            assert!(
                (pairs.values[i] - ev[i]).abs() < 1e-6,
                "{:?} vs {ev:?}",
                pairs.values
            );
            let e = &vectors[i * n..(i + 1) * n];
            let cos: f64 = pairs.vectors[i].iter().zip(e).map(|(a, b)| a * b).sum();
            assert!(cos.abs() > 0.9999, "eigenvector {i}: |cos| {cos}");
        }
        let embedding: Vec<[f32; 2]> = floats(&f["embedding"])
            .chunks(2)
            .map(|p| [p[0] as f32, p[1] as f32])
            .collect();
        for k in [5, 10] {
            let t = trustworthiness(&x[..75 * dim], dim, &embedding, k).unwrap();
            let e = f["trustworthiness"][k.to_string()].as_f64().unwrap();
            assert!((t - e).abs() < 1e-9, "trustworthiness k={k}: {t} vs {e}");
        }
    }

    #[test]
    fn trustworthiness_extremes() {
        let (x, _) = mixture(2, 20, 2, 9);
        let same: Vec<[f32; 2]> = x.chunks(2).map(|r| [r[0], r[1]]).collect();
        assert!((trustworthiness(&x, 2, &same, 5).unwrap() - 1.0).abs() < 1e-12);
        assert!(trustworthiness(&x, 2, &same, 20).is_err());
        assert!(trustworthiness(&x, 2, &same[1..], 5).is_err());
    }
}
