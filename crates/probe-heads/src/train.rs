//! The trainer: mini-batch cross-entropy with Adam, as the original study's PyTorch loop.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::kernels::{
    self, split, AdamBuffers, AdamCoef, LayerPtrs, NextForward, SharedPtr, UpdateScratch, BLOCK,
    LANES,
};
use crate::model::{argmax_rows, forward, Dense, Probe, ProbeKind};
use crate::{rng, ProbeError, Result};

/// Training hyper-parameters. [`Default`] is the original study's: batch 8, Adam lr 1e-3,
/// 100 epochs, seed 42, PyTorch's Adam defaults (betas 0.9/0.999, eps 1e-8, no weight decay).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Mini-batch size; the last partial batch of an epoch is kept (`drop_last=False`).
    pub batch_size: usize,
    /// Adam learning rate.
    pub learning_rate: f64,
    /// Seeds the initialisation and the per-epoch shuffles (`ChaCha8Rng`).
    pub seed: u64,
    /// Adam `beta1`.
    pub beta1: f64,
    /// Adam `beta2`.
    pub beta2: f64,
    /// Adam `eps`, added to `sqrt(v̂)`.
    pub eps: f64,
    /// L2 penalty in `torch.optim.Adam`'s form (`grad += weight_decay * param`), 0 for none.
    pub weight_decay: f64,
    /// Training threads (each layer's rows are split between them). Results are bit-identical
    /// for any value; 1 (the default) suits running several folds in parallel, 2 halves the
    /// step time on an idle 2-core machine.
    pub threads: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 100,
            batch_size: 8,
            learning_rate: 1e-3,
            seed: 42,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            threads: 1,
        }
    }
}

impl TrainConfig {
    /// Adam's coefficients for optimiser step `step` (1-based) with these hyper-parameters.
    pub(crate) fn adam_coef(&self, step: u64) -> AdamCoef {
        AdamCoef::new(
            self.learning_rate,
            self.beta1,
            self.beta2,
            self.eps,
            self.weight_decay,
            step,
        )
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(ProbeError::Config(what.to_string()));
        if self.epochs == 0 {
            return bad("epochs must be at least 1");
        }
        if self.threads == 0 || self.threads > 64 {
            return bad("threads must be between 1 and 64");
        }
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1");
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad("learning_rate must be a positive number");
        }
        if !((0.0..1.0).contains(&self.beta1) && (0.0..1.0).contains(&self.beta2)) {
            return bad("beta1 and beta2 must be in [0, 1)");
        }
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return bad("eps must be a non-negative number");
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("weight_decay must be a non-negative number");
        }
        Ok(())
    }
}

/// Labelled features: row-major `features` `[n, n_features]` and one class index per row.
#[derive(Debug, Clone, Copy)]
pub struct Dataset<'a> {
    features: &'a [f32],
    labels: &'a [usize],
    n_features: usize,
}

impl<'a> Dataset<'a> {
    /// Checks shapes and that every feature is finite. Labels are checked against the class
    /// count when training starts.
    pub fn new(features: &'a [f32], labels: &'a [usize], n_features: usize) -> Result<Self> {
        if n_features == 0 || features.len() != labels.len() * n_features {
            return Err(ProbeError::Shape {
                what: "features",
                len: features.len(),
                n_features,
            });
        }
        if labels.is_empty() {
            return Err(ProbeError::Config("dataset has no rows".into()));
        }
        if let Some(i) = features.iter().position(|v| !v.is_finite()) {
            return Err(ProbeError::NonFinite {
                row: i / n_features,
                feature: i % n_features,
            });
        }
        Ok(Self {
            features,
            labels,
            n_features,
        })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Always false (an empty dataset is rejected by [`Dataset::new`]).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Feature width.
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    /// The features, row-major.
    pub fn features(&self) -> &'a [f32] {
        self.features
    }

    /// The labels.
    pub fn labels(&self) -> &'a [usize] {
        self.labels
    }

    pub(crate) fn check_labels(&self, n_classes: usize) -> Result<()> {
        match self.labels.iter().position(|&y| y >= n_classes) {
            None => Ok(()),
            Some(index) => Err(ProbeError::Label {
                label: self.labels[index],
                index,
                n_classes,
            }),
        }
    }
}

/// What the per-epoch hook receives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Total epochs configured.
    pub epochs: usize,
    /// Mean over the epoch's mini-batches of the batch-mean cross-entropy (as
    /// `running_loss / len(loader)` in the PyTorch loop).
    pub train_loss: f64,
    /// Validation accuracy after this epoch, when a validation set was given.
    pub val_accuracy: Option<f64>,
    /// Validation mean cross-entropy after this epoch, when a validation set was given.
    pub val_loss: Option<f64>,
    /// Optimiser steps so far.
    pub steps: u64,
    /// Wall time of this epoch's training steps (excluding validation).
    pub train_time: Duration,
}

/// A trained model and how it got there: what [`Trainer::train`] ([`TrainedProbe`]) and
/// [`Trainer::train_weighted`](crate::Trainer::train_weighted) ([`TrainedWeightedProbe`](crate::TrainedWeightedProbe)) return.
#[derive(Debug, Clone)]
pub struct Trained<M> {
    /// The best-validation-accuracy epoch's model when a validation set was given, otherwise
    /// the last epoch's.
    pub model: M,
    /// The 1-based epoch whose weights `model` holds when a validation set was given (the first
    /// epoch reaching the best accuracy); `None` without a validation set.
    pub best_epoch: Option<usize>,
    /// One entry per epoch run (`val_*` filled with a validation set).
    pub history: Vec<EpochStats>,
}

/// The result of [`Trainer::train`].
pub type TrainedProbe = Trained<Probe>;

/// Trains probes with a fixed [`TrainConfig`].
#[derive(Debug, Clone, Default)]
pub struct Trainer {
    config: TrainConfig,
}

impl Trainer {
    /// A trainer with `config` (validated when training starts).
    pub fn new(config: TrainConfig) -> Self {
        Self { config }
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Trains a fresh probe of `kind` on `train` for `n_classes` classes, like the original
    /// PyTorch loop: PyTorch's default initialisation, each epoch a new shuffle
    /// (`DataLoader(shuffle=True, drop_last=False)`), cross-entropy averaged over each batch,
    /// `torch.optim.Adam`. Everything random comes from `ChaCha8Rng::seed_from_u64(seed)`
    /// (initialisation first, then one Fisher-Yates shuffle per epoch), so a seed gives the
    /// same probe on the same CPU. The AVX2+FMA code path is chosen at run time and rounds
    /// differently from the portable one, so two CPUs may differ in the last bits.
    ///
    /// With `val`, the accuracy on it is measured after every epoch and the weights of the best
    /// epoch are returned. `on_epoch` is called after every epoch (for a progress bar or early
    /// stopping); returning [`ControlFlow::Break`] stops training after that epoch.
    pub fn train(
        &self,
        kind: ProbeKind,
        n_classes: usize,
        train: &Dataset<'_>,
        val: Option<&Dataset<'_>>,
        on_epoch: impl FnMut(&EpochStats) -> ControlFlow<()>,
    ) -> Result<TrainedProbe> {
        let cfg = &self.config;
        check_inputs(cfg, kind, n_classes, train, val)?;
        let mut rng = rng(cfg.seed);
        let probe = Probe::init(kind, train.n_features, n_classes, &mut rng);
        let mut adam: Vec<AdamBuffers> = probe
            .layers()
            .iter()
            .map(|l| AdamBuffers::zeros(l.in_dim, l.out_dim))
            .collect();
        let mut ws = Workspace::new(probe.layers(), cfg.batch_size);
        let mut step = 0u64;
        let use_fma = kernels::has_avx2_fma();
        let fitted = run_epochs(
            cfg,
            train.len(),
            &mut rng,
            probe,
            |probe, order| {
                let mut args = EpochArgs {
                    layers: probe.layers_mut(),
                    adam: &mut adam,
                    ws: &mut ws,
                    data: train,
                    order,
                    cfg,
                    step: &mut step,
                };
                run_epoch(&mut args, use_fma)
            },
            |probe| Ok(val.map(|val| evaluate(probe, val))),
            on_epoch,
        )?;
        Ok(fitted)
    }
}

/// The checks both trainers make before anything is allocated: hyper-parameters, class count,
/// hidden width, labels in range, equal train/validation widths.
pub(crate) fn check_inputs(
    cfg: &TrainConfig,
    kind: ProbeKind,
    n_classes: usize,
    train: &Dataset<'_>,
    val: Option<&Dataset<'_>>,
) -> Result<()> {
    cfg.validate()?;
    if n_classes < 2 {
        return Err(ProbeError::Config(format!(
            "need at least 2 classes, got {n_classes}"
        )));
    }
    if let ProbeKind::ThreeLayer { hidden: 0 } = kind {
        return Err(ProbeError::Config("hidden width must be at least 1".into()));
    }
    train.check_labels(n_classes)?;
    if let Some(val) = val {
        val.check_labels(n_classes)?;
        if val.n_features != train.n_features {
            return Err(ProbeError::DimMismatch {
                expected: train.n_features,
                got: val.n_features,
            });
        }
    }
    Ok(())
}

/// The epoch loop every trainer shares (the original study's): per epoch a new shuffle of the
/// training rows from `rng`, one pass of `train_epoch` over them (returning the mean batch
/// loss), validation after the epoch (`validate`: accuracy and loss, `None` without a
/// validation set), the first epoch reaching the best validation accuracy kept, the hook called,
/// and a stop on [`ControlFlow::Break`]. A loss that is not finite stops training with
/// [`ProbeError::NonFiniteLoss`].
pub(crate) fn run_epochs<M: Clone>(
    cfg: &TrainConfig,
    n_train: usize,
    rng: &mut ChaCha8Rng,
    mut model: M,
    mut train_epoch: impl FnMut(&mut M, &[usize]) -> f64,
    mut validate: impl FnMut(&M) -> Result<Option<(f64, f64)>>,
    mut on_epoch: impl FnMut(&EpochStats) -> ControlFlow<()>,
) -> Result<Trained<M>> {
    let mut order: Vec<usize> = (0..n_train).collect();
    let steps_per_epoch = n_train.div_ceil(cfg.batch_size) as u64;
    let mut steps = 0u64;
    let mut history = Vec::with_capacity(cfg.epochs);
    let mut best: Option<(f64, usize, M)> = None;
    for epoch in 1..=cfg.epochs {
        order.shuffle(rng);
        let started = Instant::now();
        let train_loss = train_epoch(&mut model, &order);
        let train_time = started.elapsed();
        steps += steps_per_epoch;
        if !train_loss.is_finite() {
            return Err(ProbeError::NonFiniteLoss {
                epoch,
                loss: train_loss,
            });
        }
        let (val_accuracy, val_loss) = match validate(&model)? {
            Some((acc, loss)) => (Some(acc), Some(loss)),
            None => (None, None),
        };
        if let Some(acc) = val_accuracy {
            if best.as_ref().is_none_or(|(b, _, _)| acc > *b) {
                best = Some((acc, epoch, model.clone()));
            }
        }
        let stats = EpochStats {
            epoch,
            epochs: cfg.epochs,
            train_loss,
            val_accuracy,
            val_loss,
            steps,
            train_time,
        };
        let flow = on_epoch(&stats);
        history.push(stats);
        if flow.is_break() {
            break;
        }
    }
    Ok(match best {
        Some((_, epoch, best_model)) => Trained {
            model: best_model,
            best_epoch: Some(epoch),
            history,
        },
        None => Trained {
            model,
            best_epoch: None,
            history,
        },
    })
}

/// Accuracy and mean cross-entropy of `probe` on `data`.
pub fn evaluate(probe: &Probe, data: &Dataset<'_>) -> (f64, f64) {
    let n_classes = probe.n_classes();
    let z = forward(probe.layers(), data.features, data.len());
    let pred = argmax_rows(&z, n_classes);
    let correct = pred.iter().zip(data.labels).filter(|(p, y)| p == y).count();
    let mut loss = 0.0_f64;
    for (row, &y) in z.chunks_exact(n_classes).zip(data.labels) {
        loss += cross_entropy(row, y);
    }
    let n = data.len() as f64;
    (correct as f64 / n, loss / n)
}

/// `-log_softmax(row)[y] = logsumexp(row) - row[y]`, in f64 (as PyTorch's `cross_entropy`): not
/// clamped, so logits that overflowed give a non-finite loss.
pub(crate) fn cross_entropy(row: &[f32], y: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = row
        .iter()
        .map(|&v| f64::from(v - max).exp())
        .sum::<f64>()
        .ln()
        + f64::from(max);
    lse - f64::from(row[y])
}

/// Preallocated activations and gradients, shared by the training threads: one training step
/// allocates nothing.
struct Workspace {
    /// Batch size rounded up to a multiple of [`BLOCK`].
    padded: usize,
    /// Pre-activations per layer, `[padded, out_l]`.
    z: Vec<Vec<f32>>,
    /// Post-ReLU activations per hidden layer, `[padded, out_l]`.
    a: Vec<Vec<f32>>,
    /// Gradients w.r.t. pre-activations, per layer.
    dz: Vec<Vec<f32>>,
    /// First layer's pre- and post-activations of the next batch (fused forward).
    z0_next: Vec<f32>,
    a0_next: Vec<f32>,
}

impl Workspace {
    fn new(layers: &[Dense], batch_size: usize) -> Self {
        let padded = batch_size.div_ceil(BLOCK) * BLOCK;
        let buf = |l: &Dense| vec![0.0_f32; padded * l.out_dim];
        Self {
            padded,
            z: layers.iter().map(buf).collect(),
            a: layers.iter().map(buf).collect(),
            dz: layers.iter().map(buf).collect(),
            z0_next: vec![0.0; BLOCK * layers[0].out_dim],
            a0_next: vec![0.0; BLOCK * layers[0].out_dim],
        }
    }
}

struct EpochArgs<'a, 'd> {
    layers: &'a mut [Dense],
    adam: &'a mut [AdamBuffers],
    ws: &'a mut Workspace,
    data: &'a Dataset<'d>,
    order: &'a [usize],
    cfg: &'a TrainConfig,
    step: &'a mut u64,
}

/// Everything one epoch's threads share, as raw pointers (see [`SharedPtr`]).
struct Shared<'a> {
    layers: Vec<LayerPtrs>,
    z: Vec<SharedPtr>,
    a: Vec<SharedPtr>,
    dz: Vec<SharedPtr>,
    z0_next: SharedPtr,
    a0_next: SharedPtr,
    padded: usize,
    x: *const f32,
    labels: &'a [usize],
    batches: Vec<&'a [usize]>,
    cfg: &'a TrainConfig,
    first_step: u64,
    parts: usize,
    barrier: SpinBarrier,
}

// SAFETY: the raw pointers are only used by `run_part`, whose phases write disjoint ranges per
// thread and are separated by `barrier` before another thread reads them.
unsafe impl Sync for Shared<'_> {}

/// A reusable spinning barrier for the training threads (a no-op for one thread).
struct SpinBarrier {
    parties: usize,
    count: AtomicUsize,
    generation: AtomicUsize,
}

impl SpinBarrier {
    fn new(parties: usize) -> Self {
        Self {
            parties,
            count: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
        }
    }

    fn wait(&self) {
        if self.parties == 1 {
            return;
        }
        let generation = self.generation.load(Ordering::Acquire);
        if self.count.fetch_add(1, Ordering::AcqRel) + 1 == self.parties {
            self.count.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
        } else {
            let mut spins = 0u32;
            while self.generation.load(Ordering::Acquire) == generation {
                spins += 1;
                if spins < 20_000 {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
        }
    }
}

/// Runs one epoch on `cfg.threads` threads; returns the mean batch loss.
fn run_epoch(args: &mut EpochArgs<'_, '_>, use_fma: bool) -> f64 {
    let cfg = args.cfg;
    let batches: Vec<&[usize]> = args.order.chunks(cfg.batch_size).collect();
    let n_batches = batches.len();
    let parts = cfg.threads.max(1);
    let ptr = |v: &mut Vec<f32>| SharedPtr(v.as_mut_ptr());
    let shared = Shared {
        layers: args
            .layers
            .iter_mut()
            .zip(args.adam.iter_mut())
            .map(|(l, st)| LayerPtrs::new(l, st))
            .collect(),
        z: args.ws.z.iter_mut().map(ptr).collect(),
        a: args.ws.a.iter_mut().map(ptr).collect(),
        dz: args.ws.dz.iter_mut().map(ptr).collect(),
        z0_next: ptr(&mut args.ws.z0_next),
        a0_next: ptr(&mut args.ws.a0_next),
        padded: args.ws.padded,
        x: args.data.features.as_ptr(),
        labels: args.data.labels,
        batches,
        cfg,
        first_step: *args.step,
        parts,
        barrier: SpinBarrier::new(parts),
    };
    let loss = if parts == 1 {
        run_part_dispatch(&shared, 0, use_fma)
    } else {
        std::thread::scope(|s| {
            let shared = &shared;
            let workers: Vec<_> = (1..parts)
                .map(|part| s.spawn(move || run_part_dispatch(shared, part, use_fma)))
                .collect();
            let loss = run_part_dispatch(shared, 0, use_fma);
            for w in workers {
                w.join().expect("training thread panicked");
            }
            loss
        })
    };
    *args.step += n_batches as u64;
    loss
}

fn run_part_dispatch(shared: &Shared<'_>, part: usize, use_fma: bool) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if use_fma {
        // SAFETY: `use_fma` comes from `has_avx2_fma()`, so the CPU supports AVX2 and FMA.
        return unsafe { run_part_avx2(shared, part) };
    }
    let _ = use_fma;
    // SAFETY: see `run_part`.
    unsafe { run_part::<kernels::Portable>(shared, part) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
/// `run_part` compiled for AVX2 + FMA.
///
/// # Safety
/// The CPU supports AVX2 and FMA, and `run_part`'s own conditions hold.
unsafe fn run_part_avx2(shared: &Shared<'_>, part: usize) -> f64 {
    run_part::<kernels::Avx2>(shared, part)
}

#[inline(always)]
/// Thread `part`'s share of one epoch (SPMD: every thread runs every phase on its slice of
/// output rows or input columns, with a barrier wherever a phase reads another thread's
/// output). Summation orders do not depend on the number of threads, so results are
/// bit-identical for any `threads`. Returns the mean batch loss (meaningful on part 0).
///
/// # Safety
/// All threads of the epoch call this with distinct `part < shared.parts` and the pointers in
/// `shared` are valid for the epoch.
unsafe fn run_part<S: kernels::Simd>(sh: &Shared<'_>, part: usize) -> f64 {
    let cfg = sh.cfg;
    let parts = sh.parts;
    let n_layers = sh.layers.len();
    let last = n_layers - 1;
    let padded = sh.padded;
    let ident: Vec<usize> = (0..padded).collect();
    let mut rows: Vec<usize> = Vec::with_capacity(padded);
    let mut labels: Vec<usize> = Vec::with_capacity(padded);
    let mut next_rows = [0usize; BLOCK];
    let mut scratch = UpdateScratch::default();
    let (mut z0, mut a0) = (sh.z[0], sh.a[0]);
    let (mut z0_next, mut a0_next) = (sh.z0_next, sh.a0_next);
    let z_of = |l: usize, z0: SharedPtr| if l == 0 { z0 } else { sh.z[l] };
    let mut z0_ready = false;
    let mut loss_sum = 0.0_f64;
    for (bi, batch) in sh.batches.iter().enumerate() {
        let step = sh.first_step + bi as u64 + 1;
        let coef = cfg.adam_coef(step);
        rows.clear();
        rows.extend_from_slice(batch);
        rows.resize(padded, batch[0]);

        // Forward.
        let l0 = sh.layers[0];
        if !z0_ready {
            kernels::dense_forward::<S>(
                l0.w.0,
                l0.b.0,
                l0.in_dim,
                l0.out_dim,
                sh.x,
                &rows,
                split(l0.out_dim, part, parts),
                z0,
                (n_layers > 1).then_some(a0),
            );
            sh.barrier.wait();
        }
        for l in 1..n_layers {
            let layer = sh.layers[l];
            let input = if l == 1 { a0 } else { sh.a[l - 1] };
            kernels::dense_forward::<S>(
                layer.w.0,
                layer.b.0,
                layer.in_dim,
                layer.out_dim,
                input.0,
                &ident,
                split(layer.out_dim, part, parts),
                sh.z[l],
                (l < last).then_some(sh.a[l]),
            );
            sh.barrier.wait();
        }
        let n_classes = sh.layers[last].out_dim;
        if part == 0 {
            labels.clear();
            labels.extend(batch.iter().map(|&i| sh.labels[i]));
            let logits = std::slice::from_raw_parts(z_of(last, z0).0, padded * n_classes);
            let dz = std::slice::from_raw_parts_mut(sh.dz[last].0, padded * n_classes);
            let loss = kernels::cross_entropy_grad(logits, n_classes, &labels, padded, dz);
            loss_sum += f64::from(loss);
        }
        sh.barrier.wait();

        // Backward through the hidden layers (with the weights before this step's update).
        for l in (1..n_layers).rev() {
            let layer = sh.layers[l];
            let cols = split(layer.in_dim / LANES, part, parts);
            let end = if part + 1 == parts {
                layer.in_dim
            } else {
                cols.end * LANES
            };
            kernels::dense_input_grad::<S>(
                layer.w.0,
                layer.in_dim,
                layer.out_dim,
                sh.dz[l].0,
                padded / BLOCK,
                cols.start * LANES..end,
                z_of(l - 1, z0).0,
                sh.dz[l - 1],
            );
            sh.barrier.wait();
        }

        // Updates: top layers first (their inputs are this batch's activations), then the
        // first layer fused with the next batch's first-layer forward.
        for l in (1..n_layers).rev() {
            let layer = sh.layers[l];
            let input = if l == 1 { a0 } else { sh.a[l - 1] };
            kernels::dense_update::<S>(
                layer,
                split(layer.out_dim, part, parts),
                sh.dz[l].0,
                input.0,
                &ident,
                &coef,
                &mut scratch,
                None,
            );
        }
        let next = sh.batches.get(bi + 1).filter(|_| padded == BLOCK);
        let next_forward = next.map(|next| {
            for (r, slot) in next_rows.iter_mut().enumerate() {
                *slot = next.get(r).copied().unwrap_or(next[0]);
            }
            NextForward {
                x: sh.x,
                rows: &next_rows,
                z: z0_next,
                a: a0_next,
            }
        });
        kernels::dense_update::<S>(
            l0,
            split(l0.out_dim, part, parts),
            sh.dz[0].0,
            sh.x,
            &rows,
            &coef,
            &mut scratch,
            next_forward,
        );
        z0_ready = next.is_some();
        if z0_ready {
            std::mem::swap(&mut z0, &mut z0_next);
            std::mem::swap(&mut a0, &mut a0_next);
        }
        sh.barrier.wait();
    }
    loss_sum / sh.batches.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two Gaussian blobs per class in 6-d, linearly separable.
    fn blobs(n: usize, seed: u64) -> (Vec<f32>, Vec<usize>) {
        use rand::Rng;
        let mut rng = rng(seed);
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..n {
            let c = i % 3;
            for d in 0..6 {
                let centre = if d == c * 2 { 3.0 } else { 0.0 };
                x.push(centre + rng.random_range(-1.0_f32..1.0));
            }
            y.push(c);
        }
        (x, y)
    }

    #[test]
    fn learns_separable_data_and_is_deterministic() {
        let (x, y) = blobs(90, 1);
        let data = Dataset::new(&x, &y, 6).unwrap();
        for kind in [ProbeKind::Linear, ProbeKind::ThreeLayer { hidden: 16 }] {
            let cfg = TrainConfig {
                epochs: 15,
                learning_rate: 1e-2,
                ..TrainConfig::default()
            };
            let trainer = Trainer::new(cfg);
            let mut losses = Vec::new();
            let a = trainer
                .train(kind, 3, &data, None, |s| {
                    losses.push(s.train_loss);
                    ControlFlow::Continue(())
                })
                .unwrap();
            let b = trainer
                .train(kind, 3, &data, None, |_| ControlFlow::Continue(()))
                .unwrap();
            assert_eq!(a.model, b.model, "same seed, same probe");
            assert!(losses.last().unwrap() < &(losses[0] * 0.5), "{losses:?}");
            let (acc, _) = evaluate(&a.model, &data);
            assert!(acc > 0.95, "{kind:?} accuracy {acc}");
            assert_eq!(a.history.len(), 15);
            assert_eq!(a.history[14].steps, 15 * 90_u64.div_ceil(8));
        }
    }

    #[test]
    fn two_threads_give_bit_identical_probes() {
        let (x, y) = blobs(77, 6);
        let data = Dataset::new(&x, &y, 6).unwrap();
        for kind in [ProbeKind::Linear, ProbeKind::ThreeLayer { hidden: 20 }] {
            for batch_size in [8, 12] {
                let run = |threads| {
                    let cfg = TrainConfig {
                        epochs: 3,
                        batch_size,
                        threads,
                        ..TrainConfig::default()
                    };
                    Trainer::new(cfg)
                        .train(kind, 3, &data, None, |_| ControlFlow::Continue(()))
                        .unwrap()
                };
                let (one, two) = (run(1), run(2));
                assert_eq!(one.model, two.model, "{kind:?} batch {batch_size}");
                assert_eq!(one.history[2].train_loss, two.history[2].train_loss);
                assert_eq!(run(3).model, one.model);
            }
        }
    }

    #[test]
    fn batch_sizes_other_than_eight_train_too() {
        let (x, y) = blobs(61, 2);
        let data = Dataset::new(&x, &y, 6).unwrap();
        for batch_size in [1, 5, 13, 32] {
            let cfg = TrainConfig {
                epochs: 10,
                batch_size,
                learning_rate: 1e-2,
                ..TrainConfig::default()
            };
            let t = Trainer::new(cfg)
                .train(ProbeKind::ThreeLayer { hidden: 16 }, 3, &data, None, |_| {
                    ControlFlow::Continue(())
                })
                .unwrap();
            assert!(evaluate(&t.model, &data).0 > 0.9, "batch {batch_size}");
        }
    }

    #[test]
    fn best_epoch_weights_are_kept_and_break_stops() {
        let (x, y) = blobs(60, 3);
        let (vx, vy) = blobs(30, 4);
        let data = Dataset::new(&x, &y, 6).unwrap();
        let val = Dataset::new(&vx, &vy, 6).unwrap();
        let cfg = TrainConfig {
            epochs: 8,
            ..TrainConfig::default()
        };
        let t = Trainer::new(cfg)
            .train(ProbeKind::Linear, 3, &data, Some(&val), |s| {
                if s.epoch == 6 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .unwrap();
        assert_eq!(t.history.len(), 6);
        let best = t.best_epoch.unwrap();
        let accs: Vec<f64> = t.history.iter().map(|s| s.val_accuracy.unwrap()).collect();
        let max = accs.iter().cloned().fold(f64::MIN, f64::max);
        assert_eq!(accs[best - 1], max);
        assert!(
            accs[..best - 1].iter().all(|&a| a < max),
            "first best epoch"
        );
        assert_eq!(evaluate(&t.model, &val).0, max);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let (x, y) = blobs(10, 5);
        assert!(Dataset::new(&x[..59], &y, 6).is_err());
        let mut nan = x.clone();
        nan[7] = f32::NAN;
        assert!(matches!(
            Dataset::new(&nan, &y, 6),
            Err(ProbeError::NonFinite { row: 1, feature: 1 })
        ));
        let data = Dataset::new(&x, &y, 6).unwrap();
        let t = Trainer::default();
        let ok = |_: &EpochStats| ControlFlow::Continue(());
        assert!(matches!(
            t.train(ProbeKind::Linear, 2, &data, None, ok),
            Err(ProbeError::Label { label: 2, .. })
        ));
        let zero = Trainer::new(TrainConfig {
            batch_size: 0,
            ..TrainConfig::default()
        });
        assert!(matches!(
            zero.train(ProbeKind::Linear, 3, &data, None, ok),
            Err(ProbeError::Config(_))
        ));
    }

    #[test]
    fn a_diverging_loss_stops_training_with_the_epoch() {
        // Finite features near f32::MAX and a large step: the logits overflow after a step.
        let (_, y) = blobs(40, 9);
        let huge = vec![3.0e38_f32; y.len() * 6];
        let data = Dataset::new(&huge, &y, 6).unwrap();
        let t = Trainer::new(TrainConfig {
            learning_rate: 10.0,
            epochs: 20,
            ..TrainConfig::default()
        });
        let mut epochs_seen = 0;
        let result = t.train(ProbeKind::Linear, 3, &data, None, |_| {
            epochs_seen += 1;
            ControlFlow::Continue(())
        });
        match result {
            Err(ProbeError::NonFiniteLoss { epoch, loss }) => {
                assert!(!loss.is_finite());
                assert_eq!(epoch, epochs_seen + 1, "stops at the first bad epoch");
            }
            Err(other) => panic!("expected NonFiniteLoss, got {other}"),
            Ok(t) => panic!(
                "expected NonFiniteLoss, training finished with loss {}",
                t.history.last().unwrap().train_loss
            ),
        }
        let result = t.train_weighted(ProbeKind::Linear, 2, 3, &data, None, |_| {
            ControlFlow::Continue(())
        });
        assert!(
            matches!(result, Err(ProbeError::NonFiniteLoss { .. })),
            "weighted probe: {:?}",
            result.map(|t| t.history.last().unwrap().train_loss)
        );
    }
}
