//! Probes on frozen features: [`LinearClassifier`] (`in_dim -> C`) and
//! [`ThreeLayerClassifier`] (`in_dim -> 256 -> 256 -> C`, ReLU), trained like the original
//! study's PyTorch loop, with safetensors [`Checkpoint`]s that reload without extra arguments.
//!
//! * **Initialisation** is PyTorch's `nn.Linear` default: `kaiming_uniform_(a=√5)`, i.e.
//!   `U(-1/√fan_in, 1/√fan_in)` for weights and the same bound for biases.
//! * **Training** ([`Trainer::train`]) minimises the batch-mean cross-entropy with Adam exactly as
//!   `torch.optim.Adam` computes it (bias corrections `1 - β^t`, `eps` added to `sqrt(v̂)`,
//!   optional L2 `weight_decay`); the data is reshuffled every epoch and the last partial batch
//!   is kept (`DataLoader(shuffle=True, drop_last=False)`). Defaults ([`TrainConfig::default`])
//!   are the study's: batch 8, lr 1e-3, 100 epochs, seed 42. With a validation set, the weights
//!   of the best validation-accuracy epoch are kept. A per-epoch hook receives [`EpochStats`]
//!   (train loss, validation accuracy) for progress bars and can stop training early.
//! * **Layer weighting** ([`Trainer::train_weighted`], [`WeightedProbe`]): SUPERB's learned
//!   softmax-weighted sum of hidden states in front of either probe, trained jointly by the
//!   same Adam from uniform weights (plain f32 code, gradient checked by finite differences).
//! * **Determinism**: one `ChaCha8Rng` seeded with `seed` drives initialisation and shuffles; a
//!   seed gives bit-identical probes on a given CPU (single-threaded, fixed summation order).
//!
//! ## Why a hand-written trainer
//!
//! At batch 8 a training step is dominated by per-operation overhead and by the Adam pass over
//! every parameter (~275k for the MLP), not by FLOPs: a tensor library (candle) pays several µs
//! per op on ~20 ops per step (not measured here). This crate trains on plain preallocated
//! `Vec<f32>` buffers with no allocation per step, and streams each weight row once per step:
//! the row's gradient goes to an L1-resident buffer, Adam updates the row from it (the full
//! gradient is never stored), and the updated row is multiplied with the *next* batch's inputs
//! while still in cache (the next first-layer forward pass). Measured on the 2-core AMD EPYC
//! (Zen 4) development machine (shared, load average 3-7 during these runs), 2000 x 768
//! features, 50 classes, batch 8, wall-clock time per step, single-threaded:
//!
//! | version | linear | MLP |
//! |---|---|---|
//! | plain Rust loops (LLVM did not vectorise them: scalar code) | 344 µs | 2287 µs |
//! | explicit AVX2+FMA kernels, separate passes | ~85 µs | ~660 µs |
//! | + register-blocked gradient rows, fused row passes (this crate) | 41-50 µs | 286-316 µs |
//!
//! Of the MLP step (~290 µs of CPU time), ~100 µs is Adam, bound by the `sqrt` and division units (one each per
//! 8 parameters; hardware reciprocal estimates with Newton steps measured no faster in cache, so
//! Adam keeps PyTorch's exact formula). A software-pipelined variant interleaving gradient,
//! Adam and next-forward per chunk measured 30 % slower (register spills with 16 AVX2
//! registers) and was dropped. With [`TrainConfig::threads`] = 2 each layer's rows are split
//! between two threads with bit-identical results; it only pays on an otherwise idle machine.
//! Kernels are compiled for AVX2+FMA and selected at run time, with a portable fallback.
//! `docs/PERFORMANCE.md` ("Probe training") has the side-by-side figures against PyTorch.
//!
//! ```
//! use std::ops::ControlFlow;
//! use probe_heads::{Checkpoint, Dataset, ProbeKind, TrainConfig, Trainer};
//!
//! // 4 samples x 2 features, 2 classes.
//! let features = [0.0_f32, 1.0, 0.1, 0.9, 1.0, 0.0, 0.9, 0.2];
//! let labels = [0, 0, 1, 1];
//! let train = Dataset::new(&features, &labels, 2).unwrap();
//! let config = TrainConfig { epochs: 50, learning_rate: 1e-2, ..TrainConfig::default() };
//! let trained = Trainer::new(config.clone())
//!     .train(ProbeKind::Linear, 2, &train, None, |stats| {
//!         // e.g. progress_bar.set_message(format!("loss {:.3}", stats.train_loss));
//!         let _ = stats.train_loss;
//!         ControlFlow::Continue(())
//!     })
//!     .unwrap();
//! assert_eq!(trained.model.predict(&features).unwrap(), vec![0, 0, 1, 1]);
//!
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("esc50_linear_classifier.safetensors");
//! let checkpoint = Checkpoint {
//!     probe: trained.model,
//!     class_names: vec!["dog".into(), "rain".into()],
//!     hyperparameters: Some(config),
//!     best_epoch: trained.best_epoch,
//! };
//! checkpoint.save(&path).unwrap();
//! let loaded = Checkpoint::load(&path).unwrap();
//! assert_eq!(loaded.probe.kind(), ProbeKind::Linear);
//! assert_eq!(loaded.probe.predict_proba(&features[..2]).unwrap().len(), 2);
//! ```

#![warn(missing_docs)]

use std::path::PathBuf;

mod checkpoint;
mod kernels;
mod model;
mod train;
mod weighted;

pub use checkpoint::{Checkpoint, CheckpointMetadata, FORMAT, FORMAT_VERSION};
pub use model::{Dense, LinearClassifier, Probe, ProbeKind, ThreeLayerClassifier, DEFAULT_HIDDEN};
pub use train::{evaluate, Dataset, EpochStats, TrainConfig, Trained, TrainedProbe, Trainer};
pub use weighted::{evaluate_weighted, TrainedWeightedProbe, WeightedProbe};

/// The one random stream of a training run: initialisation first, then one shuffle per epoch.
pub(crate) fn rng(seed: u64) -> rand_chacha::ChaCha8Rng {
    rand::SeedableRng::seed_from_u64(seed)
}

/// Errors from building datasets, training, inference and checkpoint I/O.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// A feature slice is not a whole number of rows of the expected width.
    #[error(
        "{what}: slice of length {len} is not a whole number of rows of {n_features} features"
    )]
    Shape {
        /// Which input.
        what: &'static str,
        /// Length of the slice.
        len: usize,
        /// Expected row width.
        n_features: usize,
    },
    /// Validation and training features differ in width.
    #[error("feature width mismatch: expected {expected}, got {got}")]
    DimMismatch {
        /// Expected width.
        expected: usize,
        /// Width given.
        got: usize,
    },
    /// A label is not below the number of classes.
    #[error("label {label} at row {index} is out of range for {n_classes} classes")]
    Label {
        /// Offending label.
        label: usize,
        /// Its row.
        index: usize,
        /// Number of classes.
        n_classes: usize,
    },
    /// The training loss stopped being a finite number (learning rate too high, or features
    /// not standardised): training stops rather than saving NaN weights.
    #[error(
        "the training loss is {loss} at epoch {epoch}: training diverged (lower the learning \
         rate, or standardise the features)"
    )]
    NonFiniteLoss {
        /// 1-based epoch.
        epoch: usize,
        /// The loss value (NaN or infinite).
        loss: f64,
    },
    /// A feature is NaN or infinite.
    #[error("non-finite feature at row {row}, feature {feature}")]
    NonFinite {
        /// Row.
        row: usize,
        /// Column.
        feature: usize,
    },
    /// An invalid hyper-parameter or architecture.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// File involved.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A checkpoint file is not valid.
    #[error("{}: not a valid probe checkpoint: {reason}", path.display())]
    Checkpoint {
        /// File involved.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, ProbeError>;
