//! A learned softmax-weighted sum of hidden states in front of a probe: SUPERB's "featurizer"
//! (Yang et al. 2021). Each item carries `L` stored layers of `D` features; the probe sees
//! `h = Σ_l softmax(α)_l x_l`, and the `L` logits `α` are trained jointly with the probe by the
//! same Adam, starting from 0 (uniform weights) as SUPERB does.
//!
//! The trainer follows [`crate::Trainer::train`]'s recipe (PyTorch's default initialisation
//! drawn from `ChaCha8Rng::seed_from_u64(seed)`, the probe first; one shuffle per epoch;
//! batch-mean cross-entropy; `torch.optim.Adam`'s update; best-validation-epoch selection) on
//! the same SIMD kernels: each step combines the batch's layers into `h`, runs the probe's
//! forward, backward and Adam update with the kernels of the plain trainer, and takes the
//! layer logits' gradient from `dL/dh` (the first dense layer's input gradient). It is
//! single-threaded (the ablation grid runs trainings in parallel instead). A scalar reference
//! of the same gradient (`loss_and_grad`, test-only) checks it against finite differences.

use std::ops::ControlFlow;

use crate::kernels::{self, adam, AdamBuffers, LayerPtrs, SharedPtr, Simd, UpdateScratch, BLOCK};
#[cfg(test)]
use crate::model::Dense;
use crate::model::{argmax_rows, Probe, ProbeKind};
use crate::rng;
#[cfg(test)]
use crate::train::cross_entropy;
use crate::train::{check_inputs, run_epochs, Dataset, EpochStats, TrainConfig, Trainer};
use crate::{ProbeError, Result};

/// A probe on the softmax-weighted sum of `n_layers` stored layers of `dim` features each.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedProbe {
    layer_logits: Vec<f32>,
    dim: usize,
    probe: Probe,
}

impl WeightedProbe {
    /// Uniform layer weights (logits 0) in front of a freshly initialised probe of `kind`.
    pub fn new(kind: ProbeKind, n_layers: usize, dim: usize, n_classes: usize, seed: u64) -> Self {
        Self {
            layer_logits: vec![0.0; n_layers],
            dim,
            probe: Probe::new(kind, dim, n_classes, seed),
        }
    }

    /// Number of layers combined.
    pub fn n_layers(&self) -> usize {
        self.layer_logits.len()
    }

    /// Features per layer.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The probe that reads the combined features.
    pub fn probe(&self) -> &Probe {
        &self.probe
    }

    /// The learned logits `α` (before the softmax).
    pub fn layer_logits(&self) -> &[f32] {
        &self.layer_logits
    }

    /// The layer weights `softmax(α)` (non-negative, summing to 1).
    pub fn layer_weights(&self) -> Vec<f32> {
        softmax(&self.layer_logits)
    }

    /// `[n, n_layers * dim]` (each row its layers one after another) -> `[n, dim]`.
    pub fn combine(&self, features: &[f32]) -> Result<Vec<f32>> {
        let width = self.n_layers() * self.dim;
        if !features.len().is_multiple_of(width) {
            return Err(ProbeError::Shape {
                what: "layer features",
                len: features.len(),
                n_features: width,
            });
        }
        let w = self.layer_weights();
        Ok(features
            .chunks_exact(width)
            .flat_map(|row| combine_row(row, &w, self.dim))
            .collect())
    }

    /// Logits `[n, n_classes]` for `[n, n_layers * dim]` features.
    pub fn logits(&self, features: &[f32]) -> Result<Vec<f32>> {
        self.probe.logits(&self.combine(features)?)
    }

    /// Predicted class per row (arg-max, first maximum on ties).
    pub fn predict(&self, features: &[f32]) -> Result<Vec<usize>> {
        Ok(argmax_rows(&self.logits(features)?, self.probe.n_classes()))
    }
}

fn softmax(z: &[f32]) -> Vec<f32> {
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = z.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = e.iter().sum();
    e.iter().map(|v| v / sum).collect()
}

fn combine_row(row: &[f32], w: &[f32], dim: usize) -> Vec<f32> {
    let mut h = vec![0.0_f32; dim];
    for (l, &wl) in w.iter().enumerate() {
        for (hd, &x) in h.iter_mut().zip(&row[l * dim..(l + 1) * dim]) {
            *hd += wl * x;
        }
    }
    h
}

/// The result of [`Trainer::train_weighted`].
pub type TrainedWeightedProbe = crate::train::Trained<WeightedProbe>;

#[cfg(test)]
/// Gradients of the batch-mean cross-entropy w.r.t. every parameter.
#[derive(Debug, Clone, PartialEq)]
struct Grads {
    layer_logits: Vec<f32>,
    /// Per dense layer: weight `[out, in]`, bias `[out]`.
    dense: Vec<(Vec<f32>, Vec<f32>)>,
}

#[cfg(test)]
impl Grads {
    fn zeros(model: &WeightedProbe) -> Self {
        Self {
            layer_logits: vec![0.0; model.n_layers()],
            dense: model
                .probe
                .layers()
                .iter()
                .map(|l| (vec![0.0; l.weight.len()], vec![0.0; l.bias.len()]))
                .collect(),
        }
    }
}

#[cfg(test)]
fn dense_forward(layer: &Dense, input: &[f32], rows: usize) -> Vec<f32> {
    let mut z = vec![0.0_f32; rows * layer.out_dim];
    for r in 0..rows {
        let x = &input[r * layer.in_dim..(r + 1) * layer.in_dim];
        for o in 0..layer.out_dim {
            z[r * layer.out_dim + o] =
                dot(&layer.weight[o * layer.in_dim..(o + 1) * layer.in_dim], x) + layer.bias[o];
        }
    }
    z
}

#[cfg(test)]
/// Batch-mean cross-entropy of `model` on the rows `x` (`[rows, L*D]`) and its gradients
/// (written into `grads`, overwriting them).
fn loss_and_grad(model: &WeightedProbe, x: &[f32], labels: &[usize], grads: &mut Grads) -> f64 {
    let rows = labels.len();
    let (n_layers, dim) = (model.n_layers(), model.dim);
    let w = model.layer_weights();
    let layers = model.probe.layers();
    // Forward, keeping each layer's input (post-ReLU) and pre-activation.
    let h: Vec<f32> = x
        .chunks_exact(n_layers * dim)
        .flat_map(|row| combine_row(row, &w, dim))
        .collect();
    let mut inputs = vec![h];
    let mut pre = Vec::new();
    for (k, layer) in layers.iter().enumerate() {
        let z = dense_forward(layer, &inputs[k], rows);
        if k + 1 < layers.len() {
            inputs.push(z.iter().map(|v| v.max(0.0)).collect());
        }
        pre.push(z);
    }
    // Cross-entropy and its gradient w.r.t. the logits.
    let n_classes = model.probe.n_classes();
    let logits = pre.last().expect("at least one layer");
    let mut dz = vec![0.0_f32; rows * n_classes];
    let mut loss = 0.0_f64;
    for r in 0..rows {
        let row = &logits[r * n_classes..(r + 1) * n_classes];
        let p = softmax(row);
        let y = labels[r];
        // Logits that overflowed make the loss non-finite and training stops.
        loss += cross_entropy(row, y);
        for c in 0..n_classes {
            dz[r * n_classes + c] = (p[c] - if c == y { 1.0 } else { 0.0 }) / rows as f32;
        }
    }
    // Backward through the dense layers.
    for k in (0..layers.len()).rev() {
        let layer = &layers[k];
        let (gw, gb) = &mut grads.dense[k];
        gw.iter_mut().for_each(|v| *v = 0.0);
        gb.iter_mut().for_each(|v| *v = 0.0);
        let input = &inputs[k];
        let mut d_input = vec![0.0_f32; rows * layer.in_dim];
        for r in 0..rows {
            let a = &input[r * layer.in_dim..(r + 1) * layer.in_dim];
            let da = &mut d_input[r * layer.in_dim..(r + 1) * layer.in_dim];
            for o in 0..layer.out_dim {
                let g = dz[r * layer.out_dim + o];
                gb[o] += g;
                let w_row = &layer.weight[o * layer.in_dim..(o + 1) * layer.in_dim];
                let gw_row = &mut gw[o * layer.in_dim..(o + 1) * layer.in_dim];
                for i in 0..layer.in_dim {
                    gw_row[i] += g * a[i];
                    da[i] += g * w_row[i];
                }
            }
        }
        if k > 0 {
            // Through the ReLU of the previous layer.
            for (d, &z) in d_input.iter_mut().zip(&pre[k - 1]) {
                if z <= 0.0 {
                    *d = 0.0;
                }
            }
        }
        dz = d_input;
    }
    // dz is now dL/dh, [rows, dim]: through the weighted sum and the softmax.
    let g_w: Vec<f32> = (0..n_layers)
        .map(|l| {
            (0..rows)
                .map(|r| {
                    dot(
                        &dz[r * dim..(r + 1) * dim],
                        &x[(r * n_layers + l) * dim..(r * n_layers + l + 1) * dim],
                    )
                })
                .sum()
        })
        .collect();
    let mean: f32 = w.iter().zip(&g_w).map(|(a, b)| a * b).sum();
    for l in 0..n_layers {
        grads.layer_logits[l] = w[l] * (g_w[l] - mean);
    }
    loss / rows as f64
}

/// Buffers of one training step, allocated once per training (a step allocates nothing).
struct StepBuffers {
    /// Batch size rounded up to a multiple of [`BLOCK`].
    padded: usize,
    /// The combined features `h` of the batch, `[padded, dim]`.
    h: Vec<f32>,
    /// `dL/dh`, `[padded, dim]`.
    dh: Vec<f32>,
    /// All ones, `[padded, dim]`: the ReLU mask of the first layer's input gradient lets every
    /// column through (nothing is rectified in front of the first dense layer).
    ones: Vec<f32>,
    /// Per dense layer: pre-activations, post-ReLU activations, gradients w.r.t. `z`.
    z: Vec<Vec<f32>>,
    a: Vec<Vec<f32>>,
    dz: Vec<Vec<f32>>,
    adam: Vec<AdamBuffers>,
    /// Adam moments of the layer logits.
    logit_m: Vec<f32>,
    logit_v: Vec<f32>,
    /// `0..padded`.
    ident: Vec<usize>,
    rows: Vec<usize>,
    labels: Vec<usize>,
    scratch: UpdateScratch,
    /// Layer weights `softmax(α)` and the gradient w.r.t. them, then w.r.t. `α`.
    w: Vec<f32>,
    g: Vec<f32>,
}

impl StepBuffers {
    fn new(model: &WeightedProbe, batch_size: usize) -> Self {
        let padded = batch_size.div_ceil(BLOCK) * BLOCK;
        let layers = model.probe.layers();
        let per_layer = || -> Vec<Vec<f32>> {
            layers
                .iter()
                .map(|l| vec![0.0; padded * l.out_dim])
                .collect()
        };
        let n_layers = model.n_layers();
        Self {
            padded,
            h: vec![0.0; padded * model.dim],
            dh: vec![0.0; padded * model.dim],
            ones: vec![1.0; padded * model.dim],
            z: per_layer(),
            a: per_layer(),
            dz: per_layer(),
            adam: layers
                .iter()
                .map(|l| AdamBuffers::zeros(l.in_dim, l.out_dim))
                .collect(),
            logit_m: vec![0.0; n_layers],
            logit_v: vec![0.0; n_layers],
            ident: (0..padded).collect(),
            rows: Vec::with_capacity(padded),
            labels: Vec::with_capacity(padded),
            scratch: UpdateScratch::default(),
            w: vec![0.0; n_layers],
            g: vec![0.0; n_layers],
        }
    }
}

/// One Adam step of `model` on the items `batch` of `data` (`[n, n_layers * dim]` rows);
/// returns the batch-mean cross-entropy before the update.
fn weighted_step(
    model: &mut WeightedProbe,
    data: &Dataset<'_>,
    batch: &[usize],
    buf: &mut StepBuffers,
    cfg: &TrainConfig,
    step: u64,
    use_fma: bool,
) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if use_fma {
        // SAFETY: `use_fma` comes from `has_avx2_fma()`, so the CPU supports AVX2 and FMA.
        return unsafe { weighted_step_avx2(model, data, batch, buf, cfg, step) };
    }
    let _ = use_fma;
    // SAFETY: `Portable` needs no CPU feature; the buffers are sized for `model` and the
    // batch size by `StepBuffers::new` (see `weighted_step_simd`).
    unsafe { weighted_step_simd::<kernels::Portable>(model, data, batch, buf, cfg, step) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
/// [`weighted_step_simd`] compiled for AVX2 + FMA.
///
/// # Safety
/// The CPU supports AVX2 and FMA, and `weighted_step_simd`'s own conditions hold.
unsafe fn weighted_step_avx2(
    model: &mut WeightedProbe,
    data: &Dataset<'_>,
    batch: &[usize],
    buf: &mut StepBuffers,
    cfg: &TrainConfig,
    step: u64,
) -> f64 {
    weighted_step_simd::<kernels::Avx2>(model, data, batch, buf, cfg, step)
}

#[inline(always)]
/// The body of [`weighted_step`] on the SIMD type `S`.
///
/// The conditions are: `buf` comes from [`StepBuffers::new`] for `model` with a batch size of
/// at least `batch.len()`; `batch` is non-empty and indexes rows of `data`, whose width is
/// `model.n_layers() * model.dim()`.
///
/// # Safety
/// The conditions above hold and the CPU supports `S`'s instructions.
unsafe fn weighted_step_simd<S: Simd>(
    model: &mut WeightedProbe,
    data: &Dataset<'_>,
    batch: &[usize],
    buf: &mut StepBuffers,
    cfg: &TrainConfig,
    step: u64,
) -> f64 {
    let (n_layers, dim) = (model.n_layers(), model.dim);
    let width = n_layers * dim;
    let padded = buf.padded;
    let x = data.features();
    // Layer weights and the batch's rows, padded with its first row (whose gradient is zero).
    let max = model
        .layer_logits
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0_f32;
    for (w, &a) in buf.w.iter_mut().zip(&model.layer_logits) {
        *w = (a - max).exp();
        sum += *w;
    }
    buf.w.iter_mut().for_each(|w| *w /= sum);
    buf.rows.clear();
    buf.rows.extend_from_slice(batch);
    buf.rows.resize(padded, batch[0]);
    buf.labels.clear();
    buf.labels.extend(batch.iter().map(|&i| data.labels()[i]));
    // h = Σ_l w_l x_l, summed as `WeightedProbe::combine` does.
    for (k, &r) in buf.rows.iter().enumerate() {
        let h = &mut buf.h[k * dim..(k + 1) * dim];
        h.fill(0.0);
        let row = &x[r * width..(r + 1) * width];
        for (l, &wl) in buf.w.iter().enumerate() {
            for (hd, &v) in h.iter_mut().zip(&row[l * dim..(l + 1) * dim]) {
                *hd += wl * v;
            }
        }
    }
    let ptr = |v: &mut Vec<f32>| SharedPtr(v.as_mut_ptr());
    let layers = model.probe.layers_mut();
    let last = layers.len() - 1;
    let n_blocks = padded / BLOCK;
    // Forward.
    for (l, layer) in layers.iter().enumerate() {
        let input = if l == 0 {
            buf.h.as_ptr()
        } else {
            buf.a[l - 1].as_ptr()
        };
        let a = (l < last).then(|| ptr(&mut buf.a[l]));
        kernels::dense_forward::<S>(
            layer.weight.as_ptr(),
            layer.bias.as_ptr(),
            layer.in_dim,
            layer.out_dim,
            input,
            &buf.ident,
            0..layer.out_dim,
            ptr(&mut buf.z[l]),
            a,
        );
    }
    let n_classes = layers[last].out_dim;
    let loss = kernels::cross_entropy_grad(
        &buf.z[last],
        n_classes,
        &buf.labels,
        padded,
        &mut buf.dz[last],
    );
    // Backward with the weights before this step's update: the hidden layers, then dL/dh.
    for l in (1..layers.len()).rev() {
        let layer = &layers[l];
        kernels::dense_input_grad::<S>(
            layer.weight.as_ptr(),
            layer.in_dim,
            layer.out_dim,
            buf.dz[l].as_ptr(),
            n_blocks,
            0..layer.in_dim,
            buf.z[l - 1].as_ptr(),
            ptr(&mut buf.dz[l - 1]),
        );
    }
    kernels::dense_input_grad::<S>(
        layers[0].weight.as_ptr(),
        dim,
        layers[0].out_dim,
        buf.dz[0].as_ptr(),
        n_blocks,
        0..dim,
        buf.ones.as_ptr(),
        ptr(&mut buf.dh),
    );
    // dL/dw_l = Σ_k dh_k · x_{k,l}, then through the softmax: dL/dα_l = w_l (g_l - Σ_j w_j g_j).
    for (l, g) in buf.g.iter_mut().enumerate() {
        let mut s = 0.0_f32;
        for (k, &r) in batch.iter().enumerate() {
            let xs = &x[r * width + l * dim..r * width + (l + 1) * dim];
            s += dot(&buf.dh[k * dim..(k + 1) * dim], xs);
        }
        *g = s;
    }
    let mean: f32 = buf.w.iter().zip(&buf.g).map(|(w, g)| w * g).sum();
    for (g, &w) in buf.g.iter_mut().zip(&buf.w) {
        *g = w * (*g - mean);
    }
    // Updates.
    let coef = cfg.adam_coef(step);
    for l in (0..layers.len()).rev() {
        let input = if l == 0 {
            buf.h.as_ptr()
        } else {
            buf.a[l - 1].as_ptr()
        };
        let out_dim = layers[l].out_dim;
        let ptrs = LayerPtrs::new(&mut layers[l], &mut buf.adam[l]);
        kernels::dense_update::<S>(
            ptrs,
            0..out_dim,
            buf.dz[l].as_ptr(),
            input,
            &buf.ident,
            &coef,
            &mut buf.scratch,
            None,
        );
    }
    for l in 0..n_layers {
        adam::<S>(
            &mut model.layer_logits[l],
            &mut buf.logit_m[l],
            &mut buf.logit_v[l],
            buf.g[l],
            &coef,
        );
    }
    f64::from(loss)
}

/// `Σ_i a_i b_i` with 8 independent accumulators (vectorisable).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0_f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

impl Trainer {
    /// Trains layer weights and a fresh probe of `kind` jointly on items of `n_layers` stored
    /// layers (`train.n_features() == n_layers * dim`, each row its layers one after another).
    /// Standardise each layer beforehand if the probe would be (the pipeline fits one scaler per
    /// layer on the training part). Same recipe and hook as [`Trainer::train`]; single-threaded
    /// whatever `threads` says.
    pub fn train_weighted(
        &self,
        kind: ProbeKind,
        n_layers: usize,
        n_classes: usize,
        train: &Dataset<'_>,
        val: Option<&Dataset<'_>>,
        on_epoch: impl FnMut(&EpochStats) -> ControlFlow<()>,
    ) -> Result<TrainedWeightedProbe> {
        let cfg = self.config();
        if n_layers == 0 || !train.n_features().is_multiple_of(n_layers) {
            return Err(ProbeError::Config(format!(
                "{} features per item are not {n_layers} layers",
                train.n_features()
            )));
        }
        check_inputs(cfg, kind, n_classes, train, val)?;
        let dim = train.n_features() / n_layers;
        let mut rng = rng(cfg.seed);
        let model = WeightedProbe {
            layer_logits: vec![0.0; n_layers],
            dim,
            probe: Probe::init(kind, dim, n_classes, &mut rng),
        };
        let mut buf = StepBuffers::new(&model, cfg.batch_size);
        let use_fma = kernels::has_avx2_fma();
        let mut step = 0u64;
        let fitted = run_epochs(
            cfg,
            train.len(),
            &mut rng,
            model,
            |model, order| {
                let mut loss_sum = 0.0;
                let batches = order.chunks(cfg.batch_size);
                let n_batches = batches.len();
                for batch in batches {
                    step += 1;
                    loss_sum += weighted_step(model, train, batch, &mut buf, cfg, step, use_fma);
                }
                loss_sum / n_batches as f64
            },
            |model| val.map(|val| evaluate_weighted(model, val)).transpose(),
            on_epoch,
        )?;
        Ok(fitted)
    }
}

/// Accuracy and mean cross-entropy of `model` on `data` (`[n, n_layers * dim]` rows).
pub fn evaluate_weighted(model: &WeightedProbe, data: &Dataset<'_>) -> Result<(f64, f64)> {
    let h = model.combine(data.features())?;
    let combined = Dataset::new(&h, data.labels(), model.dim)?;
    Ok(crate::train::evaluate(&model.probe, &combined))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    /// Items of 3 layers x 4 features: only layer 1 carries the class (a shifted coordinate),
    /// layers 0 and 2 are noise.
    fn layered(n: usize, seed: u64) -> (Vec<f32>, Vec<usize>) {
        let mut rng = rng(seed);
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..n {
            let c = i % 3;
            for l in 0..3 {
                for d in 0..4 {
                    let signal = if l == 1 && d == c { 3.0 } else { 0.0 };
                    x.push(
                        signal + rng.random_range(-1.0_f32..1.0) * if l == 1 { 0.5 } else { 2.0 },
                    );
                }
            }
            y.push(c);
        }
        (x, y)
    }

    fn params(model: &mut WeightedProbe) -> Vec<&mut f32> {
        let mut all: Vec<&mut f32> = model.layer_logits.iter_mut().collect();
        for layer in model.probe.layers_mut() {
            all.extend(layer.weight.iter_mut());
            all.extend(layer.bias.iter_mut());
        }
        all
    }

    fn flat(g: &Grads) -> Vec<f32> {
        let mut v = g.layer_logits.clone();
        for (w, b) in &g.dense {
            v.extend(w);
            v.extend(b);
        }
        v
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let (x, y) = layered(5, 11);
        for kind in [ProbeKind::Linear, ProbeKind::ThreeLayer { hidden: 6 }] {
            let mut model = WeightedProbe::new(kind, 3, 4, 3, 5);
            // Non-uniform weights so every softmax term matters.
            model.layer_logits = vec![0.3, -0.2, 0.5];
            let mut grads = Grads::zeros(&model);
            loss_and_grad(&model, &x, &y, &mut grads);
            let analytic = flat(&grads);
            let n = analytic.len();
            let eps = 3e-3_f32;
            let mut scratch = Grads::zeros(&model);
            for (k, &g) in analytic.iter().enumerate().take(n) {
                let mut plus = model.clone();
                *params(&mut plus)[k] += eps;
                let mut minus = model.clone();
                *params(&mut minus)[k] -= eps;
                let numeric = (loss_and_grad(&plus, &x, &y, &mut scratch)
                    - loss_and_grad(&minus, &x, &y, &mut scratch))
                    / (2.0 * f64::from(eps));
                assert!(
                    (f64::from(g) - numeric).abs() <= 2e-3 + 2e-2 * numeric.abs(),
                    "{kind:?} parameter {k}: analytic {g}, numeric {numeric}"
                );
            }
            assert!(
                grads.layer_logits.iter().any(|g| g.abs() > 1e-4),
                "layer-logit gradients are exercised: {:?}",
                grads.layer_logits
            );
        }
    }

    /// One fast step (both SIMD paths this CPU has) equals the scalar reference gradient
    /// followed by Adam's update, for the linear probe and the MLP, with a padded last batch.
    #[test]
    fn fast_step_equals_the_reference_gradient_and_update() {
        let (x, y) = layered(13, 7);
        let data = Dataset::new(&x, &y, 12).unwrap();
        let cfg = TrainConfig {
            learning_rate: 1e-2,
            weight_decay: 1e-3,
            ..TrainConfig::default()
        };
        let batch = [3usize, 0, 12, 5, 7];
        for kind in [ProbeKind::Linear, ProbeKind::ThreeLayer { hidden: 6 }] {
            let mut start = WeightedProbe::new(kind, 3, 4, 3, 5);
            start.layer_logits = vec![0.3, -0.2, 0.5];
            // Reference: scalar gradient, then Adam's first step on every parameter.
            let mut reference = start.clone();
            let mut grads = Grads::zeros(&reference);
            let bx: Vec<f32> = batch
                .iter()
                .flat_map(|&i| x[i * 12..(i + 1) * 12].to_vec())
                .collect();
            let by: Vec<usize> = batch.iter().map(|&i| y[i]).collect();
            let ref_loss = loss_and_grad(&reference, &bx, &by, &mut grads);
            let coef = cfg.adam_coef(1);
            let g = flat(&grads);
            for (p, g) in params(&mut reference).into_iter().zip(g) {
                let (mut m, mut v) = (0.0, 0.0);
                adam::<kernels::Portable>(p, &mut m, &mut v, g, &coef);
            }
            let mut paths = vec![false];
            if kernels::has_avx2_fma() {
                paths.push(true);
            }
            for use_fma in paths {
                let mut fast = start.clone();
                let mut buf = StepBuffers::new(&fast, 8);
                let loss = weighted_step(&mut fast, &data, &batch, &mut buf, &cfg, 1, use_fma);
                assert!(
                    (loss - ref_loss).abs() < 1e-5,
                    "{kind:?}: {loss} vs {ref_loss}"
                );
                let mut want_model = reference.clone();
                let got: Vec<f32> = params(&mut fast).into_iter().map(|v| *v).collect();
                let want: Vec<f32> = params(&mut want_model).into_iter().map(|v| *v).collect();
                for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-5 + 1e-4 * w.abs(),
                        "{kind:?} fma {use_fma} parameter {k}: {g} vs {w}"
                    );
                }
                assert_ne!(fast, start, "the step moved the parameters");
            }
        }
    }

    #[test]
    fn learns_to_weight_the_informative_layer() {
        let (x, y) = layered(120, 3);
        let (vx, vy) = layered(60, 4);
        let data = Dataset::new(&x, &y, 12).unwrap();
        let val = Dataset::new(&vx, &vy, 12).unwrap();
        let cfg = TrainConfig {
            epochs: 30,
            learning_rate: 1e-2,
            ..TrainConfig::default()
        };
        let trainer = Trainer::new(cfg);
        let t = trainer
            .train_weighted(ProbeKind::Linear, 3, 3, &data, None, |_| {
                ControlFlow::Continue(())
            })
            .unwrap();
        let w = t.model.layer_weights();
        assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert!(w[1] > 0.5 && w[1] > w[0] && w[1] > w[2], "weights {w:?}");
        let (acc, _) = evaluate_weighted(&t.model, &val).unwrap();
        assert!(acc > 0.9, "accuracy {acc}");
        assert_eq!(t.model.predict(&vx).unwrap().len(), 60);
        // Deterministic, and best-epoch selection with a validation set.
        let again = trainer
            .train_weighted(ProbeKind::Linear, 3, 3, &data, None, |_| {
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(again.model, t.model);
        let v = trainer
            .train_weighted(ProbeKind::three_layer(), 3, 3, &data, Some(&val), |s| {
                if s.epoch == 5 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .unwrap();
        assert_eq!(v.history.len(), 5);
        assert!(v.best_epoch.is_some_and(|e| (1..=5).contains(&e)));
    }

    #[test]
    fn uniform_start_and_bad_shapes() {
        let m = WeightedProbe::new(ProbeKind::Linear, 4, 2, 3, 0);
        assert_eq!(m.layer_weights(), vec![0.25; 4]);
        let row: Vec<f32> = (0..8).map(|v| v as f32).collect();
        assert_eq!(m.combine(&row).unwrap(), vec![3.0, 4.0]);
        assert!(m.combine(&row[..7]).is_err());
        let (x, y) = layered(6, 1);
        let data = Dataset::new(&x, &y, 12).unwrap();
        let t = Trainer::default();
        let ok = |_: &EpochStats| ControlFlow::Continue(());
        assert!(matches!(
            t.train_weighted(ProbeKind::Linear, 5, 3, &data, None, ok),
            Err(ProbeError::Config(_))
        ));
    }
}
