//! Exact t-SNE (van der Maaten & Hinton, JMLR 2008), with scikit-learn's defaults where it has
//! them: perplexity 30 (capped at `(n - 1) / 3`), early exaggeration 12 for the first 250
//! iterations with momentum 0.5, then momentum 0.8, learning rate `max(n / 12 / 4, 50)`
//! ("auto"), per-parameter gains (+0.2 / x0.8, floor 0.01), initial points `N(0, 1e-4²)`.
//! Each iteration is O(n²) (rows in parallel with rayon): fine for the ≤ 2000 points a plot
//! needs (Barnes-Hut would pay off only beyond that).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::{normal, Result};

/// t-SNE settings; [`Default`] is described in the module docs, with 500 iterations.
#[derive(Debug, Clone, PartialEq)]
pub struct TsneConfig {
    /// Effective number of neighbours (capped at `(n - 1) / 3`).
    pub perplexity: f64,
    /// Total gradient-descent iterations (including the exaggeration phase).
    pub iterations: usize,
    /// Iterations with early exaggeration.
    pub exaggeration_iterations: usize,
    /// Early exaggeration factor.
    pub early_exaggeration: f64,
    /// Learning rate; `None` for scikit-learn's "auto" (`max(n / exaggeration / 4, 50)`).
    pub learning_rate: Option<f64>,
    /// Seeds the initial embedding.
    pub seed: u64,
}

impl Default for TsneConfig {
    fn default() -> Self {
        Self {
            perplexity: 30.0,
            iterations: 500,
            exaggeration_iterations: 250,
            early_exaggeration: 12.0,
            learning_rate: None,
            seed: 42,
        }
    }
}

/// Embeds the rows of `x` (`[n, dim]` row-major) in 2-d. Deterministic for a seed (the
/// parallel parts reduce in a fixed order). Errors on a ragged slice or non-finite values;
/// fewer than 2 rows give points at the origin.
pub fn tsne(x: &[f32], dim: usize, cfg: &TsneConfig) -> Result<Vec<[f32; 2]>> {
    let n = crate::count_rows(x, dim, "t-SNE")?;
    if n < 2 {
        return Ok(vec![[0.0, 0.0]; n]);
    }
    let p = joint_probabilities(x, n, dim, cfg.perplexity);
    let lr = cfg
        .learning_rate
        .unwrap_or_else(|| (n as f64 / cfg.early_exaggeration / 4.0).max(50.0));
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut y: Vec<f64> = (0..2 * n).map(|_| normal(&mut rng) * 1e-4).collect();
    let mut update = vec![0.0_f64; 2 * n];
    let mut gains = vec![1.0_f64; 2 * n];
    let mut grad = vec![0.0_f64; 2 * n];
    for it in 0..cfg.iterations {
        let (exaggeration, momentum) = if it < cfg.exaggeration_iterations {
            (cfg.early_exaggeration, 0.5)
        } else {
            (1.0, 0.8)
        };
        gradient(&p, &y, n, exaggeration, &mut grad);
        for k in 0..2 * n {
            gains[k] = if grad[k] * update[k] < 0.0 {
                gains[k] + 0.2
            } else {
                gains[k] * 0.8
            }
            .max(0.01);
            update[k] = momentum * update[k] - lr * gains[k] * grad[k];
            y[k] += update[k];
        }
        for d in 0..2 {
            let mean = (0..n).map(|i| y[2 * i + d]).sum::<f64>() / n as f64;
            for i in 0..n {
                y[2 * i + d] -= mean;
            }
        }
    }
    Ok(y.chunks_exact(2)
        .map(|c| [c[0] as f32, c[1] as f32])
        .collect())
}

/// Symmetrised `P` (`[n, n]`, summing to 1): per row, the Gaussian bandwidth whose conditional
/// distribution has the target perplexity (binary search on the precision), then
/// `(P + Pᵀ) / 2n`, floored at 1e-12.
fn joint_probabilities(x: &[f32], n: usize, dim: usize, perplexity: f64) -> Vec<f64> {
    let perplexity = perplexity.min((n as f64 - 1.0) / 3.0).max(1.0);
    let target = perplexity.ln();
    let conditional: Vec<Vec<f64>> = (0..n)
        .into_par_iter()
        .map(|i| {
            let xi = &x[i * dim..(i + 1) * dim];
            let d: Vec<f64> = (0..n)
                .map(|j| {
                    let xj = &x[j * dim..(j + 1) * dim];
                    xi.iter()
                        .zip(xj)
                        .map(|(a, b)| f64::from(a - b).powi(2))
                        .sum()
                })
                .collect();
            let d_min = (0..n)
                .filter(|&j| j != i)
                .map(|j| d[j])
                .fold(f64::INFINITY, f64::min);
            let (mut beta, mut lo, mut hi) = (1.0_f64, 0.0_f64, f64::INFINITY);
            let mut row = vec![0.0_f64; n];
            for _ in 0..100 {
                let mut sum = 0.0;
                let mut weighted = 0.0;
                for j in 0..n {
                    row[j] = if j == i {
                        0.0
                    } else {
                        (-(d[j] - d_min) * beta).exp()
                    };
                    sum += row[j];
                    weighted += row[j] * (d[j] - d_min);
                }
                let sum = sum.max(1e-300);
                // Entropy of the row: ln(sum) + beta * E[d].
                let entropy = sum.ln() + beta * weighted / sum;
                for v in &mut row {
                    *v /= sum;
                }
                let diff = entropy - target;
                if diff.abs() < 1e-5 {
                    break;
                }
                if diff > 0.0 {
                    lo = beta;
                    beta = if hi.is_finite() {
                        (beta + hi) / 2.0
                    } else {
                        beta * 2.0
                    };
                } else {
                    hi = beta;
                    beta = (beta + lo) / 2.0;
                }
            }
            row
        })
        .collect();
    let mut p = vec![0.0_f64; n * n];
    for i in 0..n {
        for j in 0..n {
            p[i * n + j] = ((conditional[i][j] + conditional[j][i]) / (2.0 * n as f64)).max(1e-12);
        }
    }
    p
}

/// Gradient of KL(P || Q) with Student-t `Q`: `4 Σ_j (e·p_ij - q_ij) (1 + |y_i - y_j|²)⁻¹
/// (y_i - y_j)`.
fn gradient(p: &[f64], y: &[f64], n: usize, exaggeration: f64, grad: &mut [f64]) {
    let kernel = |i: usize, j: usize| {
        let dx = y[2 * i] - y[2 * j];
        let dy = y[2 * i + 1] - y[2 * j + 1];
        1.0 / (1.0 + dx * dx + dy * dy)
    };
    let row_sums: Vec<f64> = (0..n)
        .into_par_iter()
        .map(|i| (0..n).filter(|&j| j != i).map(|j| kernel(i, j)).sum())
        .collect();
    let z: f64 = row_sums.iter().sum::<f64>().max(1e-300);
    grad.par_chunks_exact_mut(2).enumerate().for_each(|(i, g)| {
        let (mut gx, mut gy) = (0.0, 0.0);
        for j in 0..n {
            if j == i {
                continue;
            }
            let k = kernel(i, j);
            let coef = (exaggeration * p[i * n + j] - k / z) * k;
            gx += coef * (y[2 * i] - y[2 * j]);
            gy += coef * (y[2 * i + 1] - y[2 * j + 1]);
        }
        g[0] = 4.0 * gx;
        g[1] = 4.0 * gy;
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    /// Four tight, well-separated clusters in 20-d.
    fn clusters(per: usize) -> (Vec<f32>, Vec<usize>) {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..4 * per {
            let c = i % 4;
            for d in 0..20 {
                let centre = if d % 4 == c { 10.0 } else { 0.0 };
                x.push(centre + rng.random_range(-1.0_f32..1.0));
            }
            y.push(c);
        }
        (x, y)
    }

    #[test]
    fn separated_clusters_stay_separated_and_runs_repeat() {
        let (x, y) = clusters(30);
        let cfg = TsneConfig::default();
        let e = tsne(&x, 20, &cfg).unwrap();
        assert_eq!(e.len(), 120);
        // Nearest neighbour in the embedding has the same cluster for (nearly) every point.
        let agree = crate::neighbour_agreement(&e, &y);
        // Each cluster is tight compared with the distance between cluster centres.
        let mut centres = Vec::new();
        let mut radius = 0.0_f32;
        for c in 0..4 {
            let pts: Vec<[f32; 2]> = (0..e.len()).filter(|&i| y[i] == c).map(|i| e[i]).collect();
            let m = [0, 1].map(|d| pts.iter().map(|p| p[d]).sum::<f32>() / pts.len() as f32);
            for p in &pts {
                radius = radius.max(((p[0] - m[0]).powi(2) + (p[1] - m[1]).powi(2)).sqrt());
            }
            centres.push(m);
        }
        for a in 0..4 {
            for b in a + 1..4 {
                let d = ((centres[a][0] - centres[b][0]).powi(2)
                    + (centres[a][1] - centres[b][1]).powi(2))
                .sqrt();
                assert!(
                    d > 4.0 * radius,
                    "centres {a},{b} {d} apart, radius {radius}"
                );
            }
        }
        assert!(agree == 120, "{agree}/120 neighbours in the same cluster");
        assert_eq!(tsne(&x, 20, &cfg).unwrap(), e, "deterministic");
        let spread = e
            .iter()
            .map(|p| p[0].abs().max(p[1].abs()))
            .fold(0.0, f32::max);
        assert!(spread > 1.0, "the embedding grew from 1e-4: {spread}");
    }

    #[test]
    fn conditional_rows_reach_the_perplexity() {
        let (x, _) = clusters(10);
        let n = 40;
        let p = joint_probabilities(&x, n, 20, 5.0);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-6);
        for i in 0..n {
            for j in 0..n {
                assert_eq!(p[i * n + j], p[j * n + i]);
            }
        }
    }

    #[test]
    fn degenerate_inputs() {
        assert!(tsne(&[1.0, 2.0, 3.0], 2, &TsneConfig::default()).is_err());
        assert!(tsne(&[f32::NAN, 0.0], 1, &TsneConfig::default()).is_err());
        assert_eq!(
            tsne(&[1.0, 2.0], 2, &TsneConfig::default()).unwrap(),
            vec![[0.0, 0.0]]
        );
        // Identical points do not produce NaN.
        let e = tsne(&[0.5; 40], 4, &TsneConfig::default()).unwrap();
        assert!(e.iter().all(|p| p[0].is_finite() && p[1].is_finite()));
    }
}
