//! The probe architectures and inference (`logits`, `predict`, `predict_proba`).

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::kernels::{self, BLOCK};
use crate::{ProbeError, Result};

/// Hidden width of [`ThreeLayerClassifier`] in the original study.
pub const DEFAULT_HIDDEN: usize = 256;

/// A fully connected layer `z = x Wᵀ + b` with PyTorch's `nn.Linear` layout and initialisation.
#[derive(Debug, Clone, PartialEq)]
pub struct Dense {
    pub(crate) in_dim: usize,
    pub(crate) out_dim: usize,
    /// `[out_dim, in_dim]` row-major, like `nn.Linear.weight`.
    pub(crate) weight: Vec<f32>,
    /// `[out_dim]`.
    pub(crate) bias: Vec<f32>,
}

impl Dense {
    /// PyTorch's default `nn.Linear` initialisation: `kaiming_uniform_(a=√5)` on the weight,
    /// which is `U(-1/√in_dim, 1/√in_dim)`, and the same bound for the bias. Weight first, then
    /// bias, drawn from `rng` in row-major order.
    pub(crate) fn init(in_dim: usize, out_dim: usize, rng: &mut ChaCha8Rng) -> Self {
        let bound = 1.0 / (in_dim as f32).sqrt();
        let weight = (0..in_dim * out_dim)
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        let bias = (0..out_dim)
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        Self {
            in_dim,
            out_dim,
            weight,
            bias,
        }
    }

    /// Builds a layer from existing parameters (`weight` is `[out_dim, in_dim]` row-major).
    pub fn from_parts(
        in_dim: usize,
        out_dim: usize,
        weight: Vec<f32>,
        bias: Vec<f32>,
    ) -> Result<Self> {
        if weight.len() != in_dim * out_dim || bias.len() != out_dim || in_dim == 0 || out_dim == 0
        {
            return Err(ProbeError::Config(format!(
                "dense layer {in_dim}->{out_dim} needs {} weights and {out_dim} biases, got {} and {}",
                in_dim * out_dim,
                weight.len(),
                bias.len()
            )));
        }
        Ok(Self {
            in_dim,
            out_dim,
            weight,
            bias,
        })
    }

    /// Input width.
    pub fn in_dim(&self) -> usize {
        self.in_dim
    }

    /// Output width.
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// Weight, `[out_dim, in_dim]` row-major.
    pub fn weight(&self) -> &[f32] {
        &self.weight
    }

    /// Bias, `[out_dim]`.
    pub fn bias(&self) -> &[f32] {
        &self.bias
    }
}

/// Which probe architecture, with its shape parameters other than input and class count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProbeKind {
    /// [`LinearClassifier`]: `in_dim -> n_classes`.
    Linear,
    /// [`ThreeLayerClassifier`]: `in_dim -> hidden -> hidden -> n_classes`, ReLU.
    ThreeLayer {
        /// Hidden width (256 in the original study).
        hidden: usize,
    },
}

impl ProbeKind {
    /// The original study's MLP: hidden width [`DEFAULT_HIDDEN`].
    pub fn three_layer() -> Self {
        ProbeKind::ThreeLayer {
            hidden: DEFAULT_HIDDEN,
        }
    }

    /// Short name: `"linear"` or `"three_layer"` (used in checkpoint metadata).
    pub fn name(&self) -> &'static str {
        match self {
            ProbeKind::Linear => "linear",
            ProbeKind::ThreeLayer { .. } => "three_layer",
        }
    }
}

/// Linear probe `in_dim -> n_classes` (one `nn.Linear`, checkpoint keys `fc.weight`, `fc.bias`).
#[derive(Debug, Clone, PartialEq)]
pub struct LinearClassifier {
    pub(crate) fc: Dense,
}

impl LinearClassifier {
    /// A freshly initialised probe (PyTorch's default initialisation, from `seed`).
    pub fn new(in_dim: usize, n_classes: usize, seed: u64) -> Self {
        let mut rng = crate::rng(seed);
        Self {
            fc: Dense::init(in_dim, n_classes, &mut rng),
        }
    }

    /// The single layer.
    pub fn fc(&self) -> &Dense {
        &self.fc
    }
}

/// MLP probe `in_dim -> hidden -> hidden -> n_classes` with ReLU, the original study's
/// `nn.Sequential(Linear, ReLU, Linear, ReLU, Linear)` (checkpoint keys `net.0.*`, `net.2.*`,
/// `net.4.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct ThreeLayerClassifier {
    pub(crate) layers: [Dense; 3],
}

impl ThreeLayerClassifier {
    /// A freshly initialised probe (PyTorch's default initialisation, from `seed`).
    pub fn new(in_dim: usize, hidden: usize, n_classes: usize, seed: u64) -> Self {
        let mut rng = crate::rng(seed);
        Self::init(in_dim, hidden, n_classes, &mut rng)
    }

    pub(crate) fn init(
        in_dim: usize,
        hidden: usize,
        n_classes: usize,
        rng: &mut ChaCha8Rng,
    ) -> Self {
        let l0 = Dense::init(in_dim, hidden, rng);
        let l1 = Dense::init(hidden, hidden, rng);
        let l2 = Dense::init(hidden, n_classes, rng);
        Self {
            layers: [l0, l1, l2],
        }
    }

    /// The three layers, input first.
    pub fn layers(&self) -> &[Dense; 3] {
        &self.layers
    }
}

/// A trained or loaded probe of either architecture.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// Linear probe.
    Linear(LinearClassifier),
    /// 3-layer MLP probe.
    ThreeLayer(ThreeLayerClassifier),
}

impl Probe {
    /// A freshly initialised probe of `kind` (PyTorch's default initialisation, from `seed`).
    pub fn new(kind: ProbeKind, in_dim: usize, n_classes: usize, seed: u64) -> Self {
        let mut rng = crate::rng(seed);
        Self::init(kind, in_dim, n_classes, &mut rng)
    }

    pub(crate) fn init(
        kind: ProbeKind,
        in_dim: usize,
        n_classes: usize,
        rng: &mut ChaCha8Rng,
    ) -> Self {
        match kind {
            ProbeKind::Linear => Probe::Linear(LinearClassifier {
                fc: Dense::init(in_dim, n_classes, rng),
            }),
            ProbeKind::ThreeLayer { hidden } => {
                Probe::ThreeLayer(ThreeLayerClassifier::init(in_dim, hidden, n_classes, rng))
            }
        }
    }

    /// The architecture.
    pub fn kind(&self) -> ProbeKind {
        match self {
            Probe::Linear(_) => ProbeKind::Linear,
            Probe::ThreeLayer(m) => ProbeKind::ThreeLayer {
                hidden: m.layers[0].out_dim,
            },
        }
    }

    /// The layers, input first (ReLU between consecutive layers).
    pub fn layers(&self) -> &[Dense] {
        match self {
            Probe::Linear(m) => std::slice::from_ref(&m.fc),
            Probe::ThreeLayer(m) => &m.layers,
        }
    }

    pub(crate) fn layers_mut(&mut self) -> &mut [Dense] {
        match self {
            Probe::Linear(m) => std::slice::from_mut(&mut m.fc),
            Probe::ThreeLayer(m) => &mut m.layers,
        }
    }

    /// Input feature width.
    pub fn in_dim(&self) -> usize {
        self.layers()[0].in_dim
    }

    /// Number of classes (output width).
    pub fn n_classes(&self) -> usize {
        self.layers().last().expect("at least one layer").out_dim
    }

    /// Number of trainable parameters.
    pub fn n_parameters(&self) -> usize {
        self.layers()
            .iter()
            .map(|l| l.weight.len() + l.bias.len())
            .sum()
    }

    /// Logits `[n_rows, n_classes]` for row-major features `[n_rows, in_dim]`. Errors when the
    /// slice is not a whole number of rows; an empty slice gives an empty result.
    pub fn logits(&self, features: &[f32]) -> Result<Vec<f32>> {
        let in_dim = self.in_dim();
        if !features.len().is_multiple_of(in_dim) {
            return Err(ProbeError::Shape {
                what: "features",
                len: features.len(),
                n_features: in_dim,
            });
        }
        Ok(forward(self.layers(), features, features.len() / in_dim))
    }

    /// Class probabilities `[n_rows, n_classes]` (softmax of the logits).
    pub fn predict_proba(&self, features: &[f32]) -> Result<Vec<f32>> {
        let mut z = self.logits(features)?;
        for row in z.chunks_exact_mut(self.n_classes()) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            for v in row.iter_mut() {
                *v = (*v - max).exp();
                sum += *v;
            }
            for v in row.iter_mut() {
                *v /= sum;
            }
        }
        Ok(z)
    }

    /// Predicted class per row (arg-max of the logits; the first maximum on ties, as
    /// `torch.argmax`).
    pub fn predict(&self, features: &[f32]) -> Result<Vec<usize>> {
        let z = self.logits(features)?;
        Ok(argmax_rows(&z, self.n_classes()))
    }
}

pub(crate) fn argmax_rows(z: &[f32], n_classes: usize) -> Vec<usize> {
    z.chunks_exact(n_classes)
        .map(|row| {
            let mut best = 0;
            for (j, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = j;
                }
            }
            best
        })
        .collect()
}

/// Rows processed per chunk in inference, to bound activation memory.
const INFER_CHUNK: usize = 1024;

/// Forward pass for all rows of `x`, dispatched to the AVX2+FMA build when available.
pub(crate) fn forward(layers: &[Dense], x: &[f32], n_rows: usize) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if kernels::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { forward_avx2(layers, x, n_rows) };
    }
    forward_impl::<kernels::Portable>(layers, x, n_rows)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
/// [`forward`] compiled for AVX2 + FMA.
///
/// # Safety
/// The CPU supports AVX2 and FMA.
unsafe fn forward_avx2(layers: &[Dense], x: &[f32], n_rows: usize) -> Vec<f32> {
    forward_impl::<kernels::Avx2>(layers, x, n_rows)
}

#[inline(always)]
fn forward_impl<S: kernels::Simd>(layers: &[Dense], x: &[f32], n_rows: usize) -> Vec<f32> {
    let n_classes = layers.last().expect("at least one layer").out_dim;
    let mut out = Vec::with_capacity(n_rows * n_classes);
    let mut rows = Vec::with_capacity(INFER_CHUNK);
    let mut bufs: Vec<Vec<f32>> = layers.iter().map(|_| Vec::new()).collect();
    let ident: Vec<usize> = (0..INFER_CHUNK).collect();
    for start in (0..n_rows).step_by(INFER_CHUNK) {
        let end = (start + INFER_CHUNK).min(n_rows);
        let padded = (end - start).div_ceil(BLOCK) * BLOCK;
        rows.clear();
        rows.extend(start..end);
        rows.resize(padded, start);
        for (l, layer) in layers.iter().enumerate() {
            let (done, rest) = bufs.split_at_mut(l);
            let buf = &mut rest[0];
            buf.clear();
            buf.resize(padded * layer.out_dim, 0.0);
            let (input, input_rows) = if l == 0 {
                (x, &rows[..])
            } else {
                (&done[l - 1][..], &ident[..padded])
            };
            assert!(input_rows
                .iter()
                .all(|&r| (r + 1) * layer.in_dim <= input.len()));
            // SAFETY: shapes checked above (weights by construction, rows by the assert);
            // single-threaded, so the whole output is ours.
            unsafe {
                kernels::dense_forward::<S>(
                    layer.weight.as_ptr(),
                    layer.bias.as_ptr(),
                    layer.in_dim,
                    layer.out_dim,
                    input.as_ptr(),
                    input_rows,
                    0..layer.out_dim,
                    kernels::SharedPtr(buf.as_mut_ptr()),
                    None,
                );
            }
            if l + 1 < layers.len() {
                for v in buf.iter_mut() {
                    *v = v.max(0.0);
                }
            }
        }
        out.extend_from_slice(&bufs[layers.len() - 1][..(end - start) * n_classes]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_logits(p: &Probe, x: &[f32]) -> Vec<f32> {
        let mut act = x.to_vec();
        let n = x.len() / p.in_dim();
        for (l, layer) in p.layers().iter().enumerate() {
            if l > 0 {
                act.iter_mut().for_each(|v| *v = v.max(0.0));
            }
            let mut out = vec![0.0_f32; n * layer.out_dim];
            for k in 0..n {
                for o in 0..layer.out_dim {
                    let mut s = layer.bias[o] as f64;
                    for i in 0..layer.in_dim {
                        s += layer.weight[o * layer.in_dim + i] as f64
                            * act[k * layer.in_dim + i] as f64;
                    }
                    out[k * layer.out_dim + o] = s as f32;
                }
            }
            act = out;
        }
        act
    }

    #[test]
    fn init_bounds_follow_torch() {
        let p = ThreeLayerClassifier::new(100, 16, 5, 1);
        for l in p.layers() {
            let bound = 1.0 / (l.in_dim as f32).sqrt();
            assert!(l.weight.iter().chain(&l.bias).all(|v| v.abs() <= bound));
            let max = l.weight.iter().fold(0.0_f32, |m, v| m.max(v.abs()));
            assert!(max > 0.9 * bound, "uniform over the whole range");
        }
        assert_eq!(
            LinearClassifier::new(10, 3, 7),
            LinearClassifier::new(10, 3, 7)
        );
        assert_ne!(
            LinearClassifier::new(10, 3, 7),
            LinearClassifier::new(10, 3, 8)
        );
    }

    #[test]
    fn logits_match_naive_for_ragged_row_counts() {
        for kind in [ProbeKind::Linear, ProbeKind::ThreeLayer { hidden: 12 }] {
            let p = Probe::new(kind, 19, 4, 3);
            for n in [1usize, 7, 8, 9, 17] {
                let x: Vec<f32> = (0..n * 19).map(|i| (i as f32 * 0.3).sin()).collect();
                let got = p.logits(&x).unwrap();
                let want = naive_logits(&p, &x);
                assert_eq!(got.len(), n * 4);
                for (g, w) in got.iter().zip(&want) {
                    assert!((g - w).abs() < 1e-5, "{kind:?} n={n}: {g} vs {w}");
                }
                let proba = p.predict_proba(&x).unwrap();
                for row in proba.chunks(4) {
                    assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
                }
                assert_eq!(p.predict(&x).unwrap(), argmax_rows(&want, 4));
            }
        }
    }

    #[test]
    fn bad_feature_width_is_an_error() {
        let p = Probe::new(ProbeKind::Linear, 4, 2, 0);
        assert!(matches!(
            p.predict(&[1.0; 6]),
            Err(ProbeError::Shape { .. })
        ));
        assert!(p.predict(&[]).unwrap().is_empty());
    }
}
