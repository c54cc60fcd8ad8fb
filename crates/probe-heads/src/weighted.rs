//! A learned softmax-weighted sum of hidden states in front of a probe: SUPERB's "featurizer"
//! (Yang et al. 2021). Each item carries `L` stored layers of `D` features; the probe sees
//! `h = Σ_l softmax(α)_l x_l`, and the `L` logits `α` are trained jointly with the probe by the
//! same Adam, starting from 0 (uniform weights) as SUPERB does.
//!
//! The trainer here is plain f32 code with manual backpropagation (no SIMD kernels: it is for
//! the layer-weighting study, not the hot path of [`crate::Trainer::train`], whose probes and
//! tests it leaves untouched). It follows the same recipe: PyTorch's default initialisation
//! drawn from `ChaCha8Rng::seed_from_u64(seed)` (the probe first), one shuffle per epoch,
//! batch-mean cross-entropy, `torch.optim.Adam`'s update, best-validation-epoch selection.

use std::ops::ControlFlow;

use crate::model::{argmax_rows, Dense, Probe, ProbeKind};
use crate::rng;
use crate::train::{
    check_inputs, cross_entropy, run_epochs, Dataset, EpochStats, TrainConfig, Trainer,
};
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

/// Gradients of the batch-mean cross-entropy w.r.t. every parameter.
#[derive(Debug, Clone, PartialEq)]
struct Grads {
    layer_logits: Vec<f32>,
    /// Per dense layer: weight `[out, in]`, bias `[out]`.
    dense: Vec<(Vec<f32>, Vec<f32>)>,
}

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

/// First and second moments of one parameter tensor.
#[derive(Debug, Clone)]
struct Moments {
    m: Vec<f32>,
    v: Vec<f32>,
}

impl Moments {
    fn zeros(n: usize) -> Self {
        Self {
            m: vec![0.0; n],
            v: vec![0.0; n],
        }
    }

    /// One `torch.optim.Adam` step (L2 `weight_decay` added to the gradient).
    fn step(&mut self, param: &mut [f32], grad: &[f32], cfg: &TrainConfig, t: u64) {
        let (b1, b2) = (cfg.beta1 as f32, cfg.beta2 as f32);
        let bias1 = 1.0 - cfg.beta1.powi(t as i32);
        let bias2_sqrt = (1.0 - cfg.beta2.powi(t as i32)).sqrt();
        let step_size = (cfg.learning_rate / bias1) as f32;
        let (bias2_sqrt, eps, wd) = (bias2_sqrt as f32, cfg.eps as f32, cfg.weight_decay as f32);
        for i in 0..param.len() {
            let g = grad[i] + wd * param[i];
            self.m[i] = b1 * self.m[i] + (1.0 - b1) * g;
            self.v[i] = b2 * self.v[i] + (1.0 - b2) * g * g;
            let denom = self.v[i].sqrt() / bias2_sqrt + eps;
            param[i] -= step_size * self.m[i] / denom;
        }
    }
}

impl Trainer {
    /// Trains layer weights and a fresh probe of `kind` jointly on items of `n_layers` stored
    /// layers (`train.n_features() == n_layers * dim`, each row its layers one after another).
    /// Standardise each layer beforehand if the probe would be (the pipeline fits one scaler per
    /// layer on the training part). Same recipe and hook as [`Trainer::train`].
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
        let mut grads = Grads::zeros(&model);
        let mut logit_moments = Moments::zeros(n_layers);
        let mut dense_moments: Vec<(Moments, Moments)> = model
            .probe
            .layers()
            .iter()
            .map(|l| (Moments::zeros(l.weight.len()), Moments::zeros(l.bias.len())))
            .collect();
        let width = train.n_features();
        let mut batch_x = Vec::with_capacity(cfg.batch_size * width);
        let mut batch_y = Vec::with_capacity(cfg.batch_size);
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
                    batch_x.clear();
                    batch_y.clear();
                    for &i in batch {
                        batch_x.extend_from_slice(&train.features()[i * width..(i + 1) * width]);
                        batch_y.push(train.labels()[i]);
                    }
                    loss_sum += loss_and_grad(model, &batch_x, &batch_y, &mut grads);
                    step += 1;
                    logit_moments.step(&mut model.layer_logits, &grads.layer_logits, cfg, step);
                    for ((layer, (gw, gb)), (mw, mb)) in model
                        .probe
                        .layers_mut()
                        .iter_mut()
                        .zip(&grads.dense)
                        .zip(&mut dense_moments)
                    {
                        mw.step(&mut layer.weight, gw, cfg, step);
                        mb.step(&mut layer.bias, gb, cfg, step);
                    }
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
