//! The shared task runner: what every dataset binary (`esc50`, `urbansound8k`, ...) is made of.
//!
//! A task crate implements [`Task`] (layout parsing, labels, official protocol, archives) and
//! calls [`cli::main`]; everything else lives here:
//!
//! - [`extract`]: parallel decode ahead of the model, length bucketing, batched HuBERT,
//!   mean pooling per layer, resumable chunks, `--shard K/N`, `merge`;
//! - [`naming`]: model slugs and where each model's stores, results and probes go;
//! - [`store`]: the feature store (safetensors, readable from Python);
//! - [`protocol`]: predefined folds, predefined splits, seeded stratified random splits;
//! - [`train`]: scaler fit on the training part only, linear and MLP probes per fold and run,
//!   metrics (macro-F1 as scikit-learn's default), results.json, report.md, predictions CSVs,
//!   saved probes;
//! - [`ablate`]: `<task> ablate`, each component varied around the study's configuration,
//!   with paired bootstrap intervals (`ablation.{md,json,csv}`, `ablation.png`,
//!   `learning_curve.png`);
//! - [`figures`]: the PNG plots next to results.json (confusion, t-SNE, per layer);
//! - [`download`] (the `download` crate, re-exported): official archives with resume,
//!   checksums and unpacking.

pub mod ablate;
mod claim;
pub mod cli;
pub mod extract;
pub mod figures;
pub mod item;
pub mod naming;
pub mod protocol;
pub mod store;
#[cfg(test)]
mod synthetic_tests;
pub mod table;
pub mod task;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod train;

pub use download;
pub use protocol::{FoldSplit, Protocol};
pub use task::{Dataset, Item, Partition, Task};
