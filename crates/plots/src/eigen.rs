//! The few eigenvectors UMAP's spectral initialisation needs: those of a sparse graph's
//! normalised Laplacian `L = I - D^-1/2 W D^-1/2` with the smallest eigenvalues after the
//! trivial one (`∝ sqrt(degree)`, eigenvalue 0 on a connected graph).
//!
//! umap-learn asks ARPACK (`scipy.sparse.linalg.eigsh(L, k, which="SM", tol=1e-4)`), an
//! implicitly restarted Lanczos method. Here: Lanczos on `M = D^-1/2 W D^-1/2` (the smallest
//! eigenvalues of `L` are the largest of `M`), the trivial eigenvector deflated, with full
//! reorthogonalisation (twice, classical Gram-Schmidt) and no restarts: the Krylov basis grows
//! until the wanted Ritz pairs' residuals `β_m |s_m,i|` are below [`TOLERANCE`] or the basis
//! reaches [`MAX_STEPS`]; the Ritz values and vectors of the tridiagonal `T_m` come from the
//! implicit QL algorithm (EISPACK `tql2`). A few thousand vertices cost well under a second.
//! Every reduction runs in a fixed order, so the result does not depend on the thread count.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// Stop once every wanted Ritz pair has `|M y - θ y| <= TOLERANCE`.
pub(crate) const TOLERANCE: f64 = 1e-6;

/// Accept the Ritz pairs at the step limit if their residual is at most this; else fail
/// (the caller falls back to a random layout, as umap-learn does when ARPACK fails).
pub(crate) const LOOSE_TOLERANCE: f64 = 1e-3;

/// Largest Krylov basis (`min(n - 1, MAX_STEPS)` vectors of `n`).
pub(crate) const MAX_STEPS: usize = 1000;

/// A symmetric sparse matrix in compressed rows (columns sorted within each row).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Csr {
    /// Row `i` is `indices[indptr[i]..indptr[i + 1]]`.
    pub indptr: Vec<usize>,
    /// Column of each stored entry.
    pub indices: Vec<usize>,
    /// Value of each stored entry.
    pub values: Vec<f64>,
}

impl Csr {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.indptr.len() - 1
    }

    /// `(column, value)` of row `i`.
    pub fn row(&self, i: usize) -> impl Iterator<Item = (usize, f64)> + '_ {
        let r = self.indptr[i]..self.indptr[i + 1];
        self.indices[r.clone()]
            .iter()
            .copied()
            .zip(self.values[r].iter().copied())
    }
}

/// The outcome of [`laplacian_eigenvectors`].
#[derive(Debug, Clone)]
pub(crate) struct Eigenpairs {
    /// Eigenvalues of `L`, ascending (the trivial 0 excluded); read by the tests.
    #[cfg_attr(not(test), allow(dead_code))]
    pub values: Vec<f64>,
    /// The matching unit eigenvectors, each of length `n`, sign fixed so that the entry of
    /// largest magnitude is positive.
    pub vectors: Vec<Vec<f64>>,
    /// Largest residual `|L y - λ y|` of the returned pairs; read by the tests.
    #[cfg_attr(not(test), allow(dead_code))]
    pub residual: f64,
}

/// The `count` eigenpairs of the normalised Laplacian of `graph` with the smallest eigenvalues
/// after the trivial one; `Err` says why none could be computed (a graph without edges, fewer
/// than `count + 1` vertices, no convergence within [`MAX_STEPS`]).
pub(crate) fn laplacian_eigenvectors(
    graph: &Csr,
    count: usize,
    seed: u64,
) -> Result<Eigenpairs, String> {
    let n = graph.rows();
    if n < count + 2 {
        return Err(format!(
            "{n} vertices are too few for {count} non-trivial eigenvectors"
        ));
    }
    let degree: Vec<f64> = (0..n).map(|i| graph.row(i).map(|(_, w)| w).sum()).collect();
    let inv_sqrt: Vec<f64> = degree
        .iter()
        .map(|&d| if d > 0.0 { 1.0 / d.sqrt() } else { 0.0 })
        .collect();
    let mut trivial: Vec<f64> = degree.iter().map(|d| d.max(0.0).sqrt()).collect();
    if normalise(&mut trivial) == 0.0 {
        return Err("the graph has no edges".into());
    }
    let apply = |x: &[f64], y: &mut [f64]| {
        y.par_iter_mut().enumerate().for_each(|(i, yi)| {
            let s: f64 = graph.row(i).map(|(j, w)| w * inv_sqrt[j] * x[j]).sum();
            *yi = inv_sqrt[i] * s;
        });
    };

    // Start: a seeded Gaussian vector, orthogonal to the trivial eigenvector.
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut v: Vec<f64> = (0..n).map(|_| crate::normal(&mut rng)).collect();
    orthogonalise(&mut v, std::slice::from_ref(&trivial));
    if normalise(&mut v) == 0.0 {
        return Err("the start vector vanished".into());
    }
    let max_steps = (n - 1).min(MAX_STEPS);
    let mut basis: Vec<Vec<f64>> = vec![v];
    let mut alpha: Vec<f64> = Vec::new();
    let mut beta: Vec<f64> = Vec::new();
    let mut w = vec![0.0; n];
    loop {
        let j = basis.len() - 1;
        apply(&basis[j], &mut w);
        let a = dot(&basis[j], &w);
        alpha.push(a);
        for (wi, qi) in w.iter_mut().zip(&basis[j]) {
            *wi -= a * qi;
        }
        if j > 0 {
            let b = beta[j - 1];
            for (wi, qi) in w.iter_mut().zip(&basis[j - 1]) {
                *wi -= b * qi;
            }
        }
        for _ in 0..2 {
            orthogonalise(&mut w, std::slice::from_ref(&trivial));
            orthogonalise(&mut w, &basis);
        }
        let b = norm(&w);
        let steps = basis.len();
        let exhausted = b <= 1e-10 || steps >= max_steps;
        if steps >= count && (exhausted || steps.is_multiple_of(4)) {
            let (theta, last) = tridiagonal_eigen(&alpha, &beta, Rows::Last)
                .ok_or("the tridiagonal QL iteration did not converge")?;
            let wanted = largest(&theta, count);
            let residual = wanted
                .iter()
                .map(|&i| b * last[0][i].abs())
                .fold(0.0, f64::max);
            if residual <= TOLERANCE || (exhausted && residual <= LOOSE_TOLERANCE) {
                let (theta, z) = tridiagonal_eigen(&alpha, &beta, Rows::All)
                    .ok_or("the tridiagonal QL iteration did not converge")?;
                let wanted = largest(&theta, count);
                let mut values = Vec::with_capacity(count);
                let mut vectors = Vec::with_capacity(count);
                for &i in &wanted {
                    let mut y = vec![0.0; n];
                    for (q, zrow) in basis.iter().zip(&z) {
                        let c = zrow[i];
                        for (yk, qk) in y.iter_mut().zip(q) {
                            *yk += c * qk;
                        }
                    }
                    normalise(&mut y);
                    let big =
                        y.iter().copied().fold(
                            0.0_f64,
                            |m, v| {
                                if v.abs() > m.abs() {
                                    v
                                } else {
                                    m
                                }
                            },
                        );
                    if big < 0.0 {
                        y.iter_mut().for_each(|v| *v = -*v);
                    }
                    values.push(1.0 - theta[i]);
                    vectors.push(y);
                }
                // The true residual, as a check on the Lanczos recurrence.
                let mut residual: f64 = 0.0;
                for (y, &lambda) in vectors.iter().zip(&values) {
                    apply(y, &mut w);
                    let r: f64 = w
                        .iter()
                        .zip(y)
                        .map(|(my, yk)| (yk - my - lambda * yk).powi(2))
                        .sum();
                    residual = residual.max(r.sqrt());
                }
                if !residual.is_finite() || residual > LOOSE_TOLERANCE {
                    return Err(format!("eigenvector residual {residual:.1e} is too large"));
                }
                return Ok(Eigenpairs {
                    values,
                    vectors,
                    residual,
                });
            }
            if exhausted {
                return Err(format!(
                    "Lanczos stopped after {steps} steps with residual {residual:.1e}"
                ));
            }
        }
        if exhausted {
            return Err(format!(
                "the Krylov space has only {steps} dimensions, fewer than {count} eigenvectors"
            ));
        }
        beta.push(b);
        let q: Vec<f64> = w.iter().map(|v| v / b).collect();
        basis.push(q);
    }
}

/// Indices of the `count` largest values, largest first.
fn largest(values: &[f64], count: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    order.truncate(count);
    order
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// Scales `a` to unit length; returns its former norm (0 leaves it unchanged).
fn normalise(a: &mut [f64]) -> f64 {
    let n = norm(a);
    if n > 0.0 {
        a.iter_mut().for_each(|v| *v /= n);
    }
    n
}

/// `w -= Σ_q (q·w) q` over the orthonormal `basis` (classical Gram-Schmidt; the coefficients
/// are computed in parallel, each dot product sequentially, so the result is deterministic).
fn orthogonalise(w: &mut [f64], basis: &[Vec<f64>]) {
    let coefs: Vec<f64> = basis.par_iter().map(|q| dot(q, w)).collect();
    w.par_chunks_mut(256).enumerate().for_each(|(c, chunk)| {
        let start = c * 256;
        for (q, &k) in basis.iter().zip(&coefs) {
            for (wi, qi) in chunk.iter_mut().zip(&q[start..]) {
                *wi -= k * qi;
            }
        }
    });
}

/// Which rows of the eigenvector matrix [`tridiagonal_eigen`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rows {
    /// Only the last row (the last component of every eigenvector: O(m²) in all).
    Last,
    /// Every row (`z[r][c]` is component `r` of eigenvector `c`: O(m³)).
    All,
}

/// Eigenvalues and (rows of) eigenvectors of the symmetric tridiagonal matrix with diagonal
/// `diag` and off-diagonal `off` (`off[i]` couples `i` and `i + 1`), by the implicit QL
/// algorithm with Wilkinson shifts (EISPACK `tql2`). Eigenvalues in no particular order;
/// `None` if an eigenvalue needs more than 60 iterations.
pub(crate) fn tridiagonal_eigen(
    diag: &[f64],
    off: &[f64],
    rows: Rows,
) -> Option<(Vec<f64>, Vec<Vec<f64>>)> {
    let m = diag.len();
    let mut d = diag.to_vec();
    let mut e = vec![0.0; m];
    e[..m.saturating_sub(1)].copy_from_slice(&off[..m.saturating_sub(1)]);
    let mut z: Vec<Vec<f64>> = match rows {
        Rows::Last => {
            let mut r = vec![0.0; m];
            if m > 0 {
                r[m - 1] = 1.0;
            }
            vec![r]
        }
        Rows::All => (0..m)
            .map(|i| {
                let mut r = vec![0.0; m];
                r[i] = 1.0;
                r
            })
            .collect(),
    };
    for l in 0..m {
        let mut iterations = 0;
        loop {
            let mut k = l;
            while k + 1 < m {
                let dd = d[k].abs() + d[k + 1].abs();
                if e[k].abs() <= f64::EPSILON * dd {
                    break;
                }
                k += 1;
            }
            if k == l {
                break;
            }
            iterations += 1;
            if iterations > 60 {
                return None;
            }
            let mut g = (d[l + 1] - d[l]) / (2.0 * e[l]);
            let mut r = g.hypot(1.0);
            g = d[k] - d[l] + e[l] / (g + r.copysign(g));
            let (mut s, mut c, mut p) = (1.0_f64, 1.0_f64, 0.0_f64);
            let mut underflow = false;
            let mut i = k;
            while i > l {
                i -= 1;
                let f = s * e[i];
                let b = c * e[i];
                r = f.hypot(g);
                e[i + 1] = r;
                if r == 0.0 {
                    d[i + 1] -= p;
                    e[k] = 0.0;
                    underflow = true;
                    break;
                }
                s = f / r;
                c = g / r;
                g = d[i + 1] - p;
                r = (d[i] - g) * s + 2.0 * c * b;
                p = s * r;
                d[i + 1] = g + p;
                g = c * r - b;
                for row in z.iter_mut() {
                    let f = row[i + 1];
                    row[i + 1] = s * row[i] + c * f;
                    row[i] = c * row[i] - s * f;
                }
            }
            if underflow {
                continue;
            }
            d[l] -= p;
            e[l] = g;
            e[k] = 0.0;
        }
    }
    Some((d, z))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tridiagonal_eigenpairs_satisfy_the_equation() {
        let diag = [2.0, -1.0, 0.5, 3.0, 1.0];
        let off = [1.0, 0.3, -0.7, 0.2];
        let (values, z) = tridiagonal_eigen(&diag, &off, Rows::All).unwrap();
        let (_, last) = tridiagonal_eigen(&diag, &off, Rows::Last).unwrap();
        for c in 0..5 {
            let v: Vec<f64> = (0..5).map(|r| z[r][c]).collect();
            assert!((norm(&v) - 1.0).abs() < 1e-12);
            assert!(
                (v[4] - last[0][c]).abs() < 1e-12,
                "last row alone is the same"
            );
            for r in 0..5 {
                let mut tv = diag[r] * v[r];
                if r > 0 {
                    tv += off[r - 1] * v[r - 1];
                }
                if r < 4 {
                    tv += off[r] * v[r + 1];
                }
                assert!((tv - values[c] * v[r]).abs() < 1e-12, "T v = λ v");
            }
        }
        let trace: f64 = diag.iter().sum();
        assert!((values.iter().sum::<f64>() - trace).abs() < 1e-12);
    }

    /// A path of `n` vertices: `L`'s eigenvalues are `1 - cos(πk/(n-1))`, all distinct.
    #[test]
    fn path_laplacian_matches_the_closed_form() {
        let n = 40;
        let mut indptr = vec![0];
        let mut indices = Vec::new();
        for i in 0..n {
            if i > 0 {
                indices.push(i - 1);
            }
            if i + 1 < n {
                indices.push(i + 1);
            }
            indptr.push(indices.len());
        }
        let values = vec![1.0; indices.len()];
        let graph = Csr {
            indptr,
            indices,
            values,
        };
        let pairs = laplacian_eigenvectors(&graph, 2, 1).unwrap();
        for (k, &v) in pairs.values.iter().enumerate() {
            let expected = 1.0 - (std::f64::consts::PI * (k + 1) as f64 / (n - 1) as f64).cos();
            assert!((v - expected).abs() < 1e-8, "{v} vs {expected}");
        }
        assert!(pairs.residual < TOLERANCE);
        // Orthogonal to each other and to the trivial eigenvector (∝ sqrt(degree)).
        let [a, b] = [&pairs.vectors[0], &pairs.vectors[1]];
        assert!(dot(a, b).abs() < 1e-8);
        let sqrt_degree: Vec<f64> = (0..n)
            .map(|i| {
                if i == 0 || i == n - 1 {
                    1.0
                } else {
                    2f64.sqrt()
                }
            })
            .collect();
        assert!(dot(a, &sqrt_degree).abs() < 1e-8);
        // Same seed, same vectors.
        let again = laplacian_eigenvectors(&graph, 2, 1).unwrap();
        assert_eq!(again.vectors, pairs.vectors);
    }

    #[test]
    fn graphs_without_edges_or_vertices_are_refused() {
        let empty = Csr {
            indptr: vec![0; 11],
            indices: vec![],
            values: vec![],
        };
        assert!(laplacian_eigenvectors(&empty, 2, 0)
            .unwrap_err()
            .contains("no edges"));
        let tiny = Csr {
            indptr: vec![0, 1, 2],
            indices: vec![1, 0],
            values: vec![1.0, 1.0],
        };
        assert!(laplacian_eigenvectors(&tiny, 2, 0).is_err());
    }
}
