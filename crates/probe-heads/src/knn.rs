//! k-nearest-neighbour classification with cosine distance (the X-ARES benchmark's kNN probe):
//! scikit-learn's `KNeighborsClassifier(n_neighbors=k, metric="cosine")` with uniform weights.
//!
//! Distances are `1 - cos(a, b)` (a zero row has cosine 0 to everything, as scikit-learn's
//! `normalize` leaves it zero). Each test row takes its `k` nearest training rows (the closer
//! one first; equal distances by training row order) and predicts the most frequent label
//! among them, the smallest label on a tie (scikit-learn's `mode`). Nothing is trained: `fit`
//! keeps the L2-normalised training rows, so prediction is one matrix product per test batch.

use crate::train::Dataset;
use crate::{ProbeError, Result};

/// A fitted cosine kNN classifier; see the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct KnnClassifier {
    k: usize,
    dim: usize,
    n_classes: usize,
    /// Training rows scaled to unit L2 norm (zero rows stay zero), row-major.
    unit: Vec<f32>,
    labels: Vec<usize>,
}

/// `x / |x|`, or `x` unchanged when its norm is 0.
fn normalise(rows: &[f32], dim: usize) -> Vec<f32> {
    let mut out = rows.to_vec();
    for row in out.chunks_exact_mut(dim) {
        let norm = row
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt();
        if norm > 0.0 {
            for v in row.iter_mut() {
                *v = (f64::from(*v) / norm) as f32;
            }
        }
    }
    out
}

/// Dot product with eight independent accumulators (vectorised by the compiler).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ar.iter().zip(br).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

impl KnnClassifier {
    /// Keeps the training set; `k` is capped at its size. Labels must be below `n_classes`.
    pub fn fit(data: &Dataset<'_>, n_classes: usize, k: usize) -> Result<Self> {
        if k == 0 {
            return Err(ProbeError::Config("kNN needs k >= 1".into()));
        }
        data.check_labels(n_classes)?;
        Ok(Self {
            k: k.min(data.len()),
            dim: data.n_features(),
            n_classes,
            unit: normalise(data.features(), data.n_features()),
            labels: data.labels().to_vec(),
        })
    }

    /// Neighbours used per prediction (`k`, capped at the training set size).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Feature width.
    pub fn in_dim(&self) -> usize {
        self.dim
    }

    /// The indices of the `k` nearest training rows of each row of `features`, nearest first.
    pub fn kneighbors(&self, features: &[f32]) -> Result<Vec<Vec<usize>>> {
        if !features.len().is_multiple_of(self.dim) {
            return Err(ProbeError::Shape {
                what: "kNN features",
                len: features.len(),
                n_features: self.dim,
            });
        }
        let queries = normalise(features, self.dim);
        let n_train = self.labels.len();
        let mut sims = vec![0.0f32; n_train];
        let mut order: Vec<usize> = Vec::with_capacity(n_train);
        Ok(queries
            .chunks_exact(self.dim)
            .map(|q| {
                for (s, row) in sims.iter_mut().zip(self.unit.chunks_exact(self.dim)) {
                    *s = dot(q, row);
                }
                order.clear();
                order.extend(0..n_train);
                // Highest similarity (lowest distance) first; equal ones by training order.
                let cmp = |a: &usize, b: &usize| sims[*b].total_cmp(&sims[*a]).then(a.cmp(b));
                if self.k < n_train {
                    order.select_nth_unstable_by(self.k - 1, cmp);
                    order.truncate(self.k);
                }
                order.sort_unstable_by(cmp);
                order.clone()
            })
            .collect())
    }

    /// The majority label among each row's `k` nearest training rows (the smallest on a tie).
    pub fn predict(&self, features: &[f32]) -> Result<Vec<usize>> {
        let mut votes = vec![0usize; self.n_classes];
        Ok(self
            .kneighbors(features)?
            .into_iter()
            .map(|neighbours| {
                votes.iter_mut().for_each(|v| *v = 0);
                for i in neighbours {
                    votes[self.labels[i]] += 1;
                }
                // First maximum: the smallest label among tied ones.
                let mut best = 0;
                for (c, &v) in votes.iter().enumerate() {
                    if v > votes[best] {
                        best = c;
                    }
                }
                best
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn votes_ties_and_zero_rows() {
        // Two training rows per direction; class 1 on the x axis, class 0 on the y axis.
        let x = [1.0, 0.0, 2.0, 0.1, 0.0, 1.0, 0.1, 3.0];
        let y = [1, 1, 0, 0];
        let data = Dataset::new(&x, &y, 2).unwrap();
        let knn = KnnClassifier::fit(&data, 2, 1).unwrap();
        assert_eq!(knn.predict(&[5.0, 0.2, 0.0, 2.0]).unwrap(), [1, 0]);
        // Scale does not matter (cosine), k = 4 of 4 rows: a 2-2 tie goes to the smaller label.
        let knn = KnnClassifier::fit(&data, 2, 10).unwrap();
        assert_eq!(knn.k(), 4);
        assert_eq!(knn.predict(&[100.0, 1.0]).unwrap(), [0]);
        // A zero query is equally far from everything: neighbours in training order.
        assert_eq!(knn.kneighbors(&[0.0, 0.0]).unwrap(), [vec![0, 1, 2, 3]]);
        assert!(knn.predict(&[1.0, 2.0, 3.0]).is_err());
        assert!(
            KnnClassifier::fit(&data, 1, 3).is_err(),
            "label 1 of 1 class"
        );
        assert!(KnnClassifier::fit(&data, 2, 0).is_err());
    }
}
