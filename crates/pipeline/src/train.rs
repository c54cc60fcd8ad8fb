//! Train and evaluate probes on a feature store under a protocol, and write the results.
//!
//! For each fold of the protocol and each of `--runs` seeds (`seed`, `seed + 1`, ...): the
//! StandardScaler is fit on the training part only, the probe(s) are trained (with best-epoch
//! selection when the fold has a validation part), and the test part is evaluated. Folds and
//! runs train in parallel (each training is single-threaded and deterministic, so results do
//! not depend on the thread count).
//!
//! `results.json` aggregates, per probe, accuracy and macro-F1 as `{mean, std, per_fold}`
//! (`per_fold` holds each fold's mean over runs; `mean` and `std` are over every fold x run
//! evaluation, `std` the sample standard deviation), the confusion matrix summed over folds
//! and runs (rows = true class), and a per-class report computed from all test predictions.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use metrics::{ClassificationReport, MeanStd};
use probe_heads::{Checkpoint, Dataset as ProbeData, ProbeKind, TrainConfig, Trainer};
use rayon::prelude::*;
use scaler::StandardScaler;
use serde::{Deserialize, Serialize};

use crate::protocol::{splits, FoldSplit, Protocol};
use crate::store::FeatureStore;
use crate::task::Task;

/// Which probe(s) to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeChoice {
    /// The linear classifier.
    Linear,
    /// The 3-layer MLP (in -> 256 -> 256 -> C, ReLU).
    Mlp,
    /// Both.
    Both,
}

impl ProbeChoice {
    /// `(results key, file name part, kind)` of each probe.
    pub fn probes(self) -> Vec<(&'static str, &'static str, ProbeKind)> {
        let linear = ("linear", "linear", ProbeKind::Linear);
        let mlp = ("mlp", "three", ProbeKind::three_layer());
        match self {
            Self::Linear => vec![linear],
            Self::Mlp => vec![mlp],
            Self::Both => vec![linear, mlp],
        }
    }
}

/// Training settings.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Probes to train.
    pub probe: ProbeChoice,
    /// Hyper-parameters (seed is the first run's).
    pub config: TrainConfig,
    /// The protocol.
    pub protocol: Protocol,
    /// Seeds per fold.
    pub runs: usize,
    /// `last`, a hidden-state index, `all` (one probe per stored layer), or `weighted` (a
    /// learned softmax-weighted sum of every stored layer, each standardised by its own scaler).
    pub layer: String,
    /// Fraction of each training part held out (group-disjoint) for best-epoch selection.
    pub val_fraction: f64,
    /// `results/<task>`.
    pub results_dir: PathBuf,
    /// Where the probes are saved (`models/`).
    pub models_dir: PathBuf,
    /// Draw the PNG plots (confusion matrices, t-SNE, per-layer accuracy) next to results.json.
    pub plots: bool,
}

/// One probe's aggregated results (the `results.json` schema).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeResults {
    /// Accuracy over folds and runs.
    pub accuracy: MeanStd,
    /// Macro-F1 over folds and runs.
    pub macro_f1: MeanStd,
    /// Balanced accuracy over folds and runs.
    pub balanced_accuracy: MeanStd,
    /// Every evaluation: fold name, run, seed, accuracy, macro-F1, best epoch.
    pub evaluations: Vec<Evaluation>,
    /// Summed over folds and runs; rows = true class.
    pub confusion_matrix: Vec<Vec<u64>>,
    /// Class names (row/column order of the confusion matrix).
    pub classes: Vec<String>,
    /// Per-class precision / recall / F1 / support over all test predictions.
    pub per_class: Vec<metrics::ClassMetrics>,
    /// Task-specific metrics over all test predictions (ICBHI: Se, Sp, score).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_metrics: Option<serde_json::Value>,
    /// Mean training time per fold x run, seconds.
    pub train_seconds: f64,
}

/// One fold x run evaluation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Evaluation {
    /// Fold name.
    pub fold: String,
    /// Run number (0-based).
    pub run: usize,
    /// Seed.
    pub seed: u64,
    /// Test accuracy.
    pub accuracy: f64,
    /// Test macro-F1.
    pub macro_f1: f64,
    /// Test balanced accuracy.
    pub balanced_accuracy: f64,
    /// Epoch whose weights were kept (validation), if any.
    pub best_epoch: Option<usize>,
    /// Items in train / valid / test.
    pub sizes: [usize; 3],
}

/// Results of one layer: probe name -> results.
pub type LayerResults = Vec<(String, ProbeResults)>;

/// Everything `train` produced.
#[derive(Debug)]
pub struct TrainOutcome {
    /// The results.json value.
    pub results: serde_json::Value,
    /// Where results.json was written.
    pub results_path: PathBuf,
    /// Where report.md was written.
    pub report_path: PathBuf,
}

struct Job<'a> {
    layer_pos: usize,
    fold_index: usize,
    fold: &'a FoldSplit,
    run: usize,
    probe: (&'static str, &'static str, ProbeKind),
}

struct JobResult {
    report: ClassificationReport,
    y_true: Vec<usize>,
    y_pred: Vec<usize>,
    eval: Evaluation,
    seconds: f64,
    checkpoint: Option<(Checkpoint, StandardScaler)>,
    /// Learned softmax layer weights (`--layer weighted`).
    layer_weights: Option<Vec<f32>>,
}

/// The position standing for `--layer weighted` in the per-layer results (labelled
/// `"weighted"`).
pub const WEIGHTED_LAYER: usize = usize::MAX;

/// Trains and evaluates, writes `results.json`, `report.md`, confusion CSVs and the probes.
pub fn train(task: &dyn Task, store: &FeatureStore, opts: &TrainOptions) -> Result<TrainOutcome> {
    if opts.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let n_classes = store.class_names.len();
    let labels = store.labels();
    let folds = splits(
        &opts.protocol,
        &store.items,
        opts.val_fraction,
        opts.config.seed,
    )?;
    let weighted = opts.layer == "weighted";
    let layer_positions: Vec<usize> = if opts.layer == "all" || weighted {
        (0..store.num_layers).collect()
    } else {
        vec![store.resolve_layer(&opts.layer)?]
    };
    let probes = opts.probe.probes();
    let layer_features: Vec<Vec<f32>> = layer_positions
        .iter()
        .map(|&p| store.layer(p))
        .collect::<Result<_>>()?;

    // One job slot per trained "layer": each stored layer, or the single weighted combination.
    let job_layers: Vec<usize> = if weighted {
        vec![WEIGHTED_LAYER]
    } else {
        layer_positions.clone()
    };
    let mut jobs = Vec::new();
    for (li, _) in job_layers.iter().enumerate() {
        for (fold_index, fold) in folds.iter().enumerate() {
            for run in 0..opts.runs {
                for &probe in &probes {
                    jobs.push(Job {
                        layer_pos: li,
                        fold_index,
                        fold,
                        run,
                        probe,
                    });
                }
            }
        }
    }
    let progress = progress_bar((jobs.len() * opts.config.epochs) as u64);
    let dim = store.dim;
    let results: Vec<JobResult> = jobs
        .par_iter()
        .map(|job| {
            if weighted {
                return run_weighted_job(
                    job,
                    &layer_features,
                    &labels,
                    dim,
                    n_classes,
                    opts,
                    &progress,
                );
            }
            run_job(
                job,
                &layer_features[job.layer_pos],
                &labels,
                dim,
                n_classes,
                &store.class_names,
                opts,
                &progress,
            )
        })
        .collect::<Result<_>>()?;
    progress.finish_and_clear();

    // Aggregate per layer and probe.
    let mut per_layer: Vec<(usize, LayerResults)> = Vec::new();
    for (li, &pos) in job_layers.iter().enumerate() {
        let mut layer_results = Vec::new();
        for &(key, _, _) in &probes {
            let mine: Vec<&JobResult> = jobs
                .iter()
                .zip(&results)
                .filter(|(j, _)| j.layer_pos == li && j.probe.0 == key)
                .map(|(_, r)| r)
                .collect();
            layer_results.push((key.to_string(), aggregate(task, &mine, &folds, store)?));
        }
        per_layer.push((pos, layer_results));
    }

    // Save the first fold's first-run probes (and their scaler) of the reported layer.
    let reported = per_layer.len() - 1;
    std::fs::create_dir_all(&opts.models_dir)
        .with_context(|| format!("cannot create {}", opts.models_dir.display()))?;
    let mut saved = Vec::new();
    for (job, result) in jobs.iter().zip(&results) {
        if let Some((ckpt, scaler)) = &result.checkpoint {
            if job.layer_pos != reported {
                continue;
            }
            let path = opts.models_dir.join(format!(
                "{}_{}_classifier.safetensors",
                task.name(),
                job.probe.1
            ));
            ckpt.save(&path)
                .with_context(|| format!("cannot save probe {}", path.display()))?;
            let scaler_path = opts
                .models_dir
                .join(format!("{}_scaler.safetensors", task.name()));
            scaler
                .save(&scaler_path)
                .with_context(|| format!("cannot save scaler {}", scaler_path.display()))?;
            saved.push(path.display().to_string());
        }
    }

    std::fs::create_dir_all(&opts.results_dir)
        .with_context(|| format!("cannot create {}", opts.results_dir.display()))?;
    let (final_pos, final_layer) = &per_layer[reported];
    for (key, r) in final_layer {
        write_confusion_csv(&opts.results_dir.join(format!("confusion_{key}.csv")), r)?;
    }
    // Learned layer weights per probe: mean and std over folds x runs.
    let layer_weights: Vec<(String, Vec<f64>, Vec<f64>)> = if weighted {
        probes
            .iter()
            .map(|&(key, _, _)| {
                let all: Vec<&Vec<f32>> = jobs
                    .iter()
                    .zip(&results)
                    .filter(|(j, _)| j.probe.0 == key)
                    .filter_map(|(_, r)| r.layer_weights.as_ref())
                    .collect();
                let n = all.len().max(1) as f64;
                let mean: Vec<f64> = (0..store.num_layers)
                    .map(|l| all.iter().map(|w| f64::from(w[l])).sum::<f64>() / n)
                    .collect();
                let std: Vec<f64> = (0..store.num_layers)
                    .map(|l| {
                        let ss: f64 = all
                            .iter()
                            .map(|w| (f64::from(w[l]) - mean[l]).powi(2))
                            .sum();
                        (ss / (n - 1.0).max(1.0)).sqrt()
                    })
                    .collect();
                (key.to_string(), mean, std)
            })
            .collect()
    } else {
        Vec::new()
    };
    let figures = if opts.plots {
        write_figures(task, store, opts, &per_layer, *final_pos, &layer_weights)?
    } else {
        Vec::new()
    };
    let mut results_json = results_json(task, store, opts, &folds, &per_layer, &saved)?;
    results_json["plots"] = serde_json::json!(figures);
    if weighted {
        let labels: Vec<serde_json::Value> = (0..store.num_layers)
            .map(|l| layer_label(store, l))
            .collect();
        results_json["layer_weights"] = layer_weights
            .iter()
            .map(|(key, mean, std)| {
                (
                    key.clone(),
                    serde_json::json!({"layers": labels, "mean": mean, "std": std}),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into();
        results_json["layer_weighting"] = serde_json::json!(
            "softmax-weighted sum of every stored layer, weights learned jointly with the probe \
             (Adam, logits initialised to 0); each layer standardised by its own StandardScaler \
             fit on the training part, before the sum"
        );
    }
    let results_path = opts.results_dir.join("results.json");
    hubert_core::store::atomic_write(
        &results_path,
        serde_json::to_string_pretty(&results_json)?.as_bytes(),
    )?;
    let report_path = opts.results_dir.join("report.md");
    hubert_core::store::atomic_write(
        &report_path,
        crate::train::report_markdown(task, store, opts, &per_layer, &saved, &figures).as_bytes(),
    )?;
    Ok(TrainOutcome {
        results: results_json,
        results_path,
        report_path,
    })
}

#[allow(clippy::too_many_arguments)]
fn run_job(
    job: &Job<'_>,
    features: &[f32],
    labels: &[usize],
    dim: usize,
    n_classes: usize,
    class_names: &[String],
    opts: &TrainOptions,
    progress: &ProgressBar,
) -> Result<JobResult> {
    let gather = |idx: &[usize]| -> (Vec<f32>, Vec<usize>) {
        let mut x = Vec::with_capacity(idx.len() * dim);
        for &i in idx {
            x.extend_from_slice(&features[i * dim..(i + 1) * dim]);
        }
        (x, idx.iter().map(|&i| labels[i]).collect())
    };
    let (train_x, train_y) = gather(&job.fold.train);
    let (valid_x, valid_y) = gather(&job.fold.valid);
    let (test_x, test_y) = gather(&job.fold.test);
    let (scaler, train_x) = StandardScaler::fit_transform(&train_x, dim)?;
    let valid_x = scaler.transform(&valid_x)?;
    let test_x = scaler.transform(&test_x)?;

    let seed = opts.config.seed + job.run as u64;
    let config = TrainConfig {
        seed,
        threads: 1,
        ..opts.config.clone()
    };
    let train_data = ProbeData::new(&train_x, &train_y, dim)?;
    let valid_data = if valid_y.is_empty() {
        None
    } else {
        Some(ProbeData::new(&valid_x, &valid_y, dim)?)
    };
    let started = std::time::Instant::now();
    let trained = Trainer::new(config.clone()).train(
        job.probe.2,
        n_classes,
        &train_data,
        valid_data.as_ref(),
        |_| {
            progress.inc(1);
            ControlFlow::Continue(())
        },
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let y_pred = trained.probe.predict(&test_x)?;
    let report = ClassificationReport::compute(&test_y, &y_pred, n_classes)?;
    let eval = Evaluation {
        fold: job.fold.name.clone(),
        run: job.run,
        seed,
        accuracy: report.accuracy,
        macro_f1: report.macro_avg.f1,
        balanced_accuracy: report.balanced_accuracy,
        best_epoch: trained.best_epoch,
        sizes: [train_y.len(), valid_y.len(), test_y.len()],
    };
    let is_first = job.run == 0 && job.fold_index == 0;
    let checkpoint = is_first.then(|| {
        let mut ckpt = Checkpoint::new(trained.probe.clone());
        ckpt.class_names = class_names.to_vec();
        ckpt.hyperparameters = Some(config.clone());
        ckpt.best_epoch = trained.best_epoch;
        (ckpt, scaler.clone())
    });
    Ok(JobResult {
        report,
        y_true: test_y,
        y_pred,
        eval,
        seconds,
        checkpoint,
        layer_weights: None,
    })
}

/// A `--layer weighted` job: one StandardScaler per layer (fit on the training part), items as
/// `[L * D]` rows, layer weights and probe trained jointly. Not saved as a checkpoint (the
/// checkpoint format holds one probe on one layer).
fn run_weighted_job(
    job: &Job<'_>,
    layers: &[Vec<f32>],
    labels: &[usize],
    dim: usize,
    n_classes: usize,
    opts: &TrainOptions,
    progress: &ProgressBar,
) -> Result<JobResult> {
    let n_layers = layers.len();
    let parts = [&job.fold.train, &job.fold.valid, &job.fold.test];
    // stacked[p]: rows of part p, each its layers one after another.
    let mut stacked: [Vec<f32>; 3] = Default::default();
    for (p, idx) in parts.iter().enumerate() {
        stacked[p] = vec![0.0; idx.len() * n_layers * dim];
    }
    for (l, features) in layers.iter().enumerate() {
        let gather = |idx: &[usize]| -> Vec<f32> {
            let mut x = Vec::with_capacity(idx.len() * dim);
            for &i in idx {
                x.extend_from_slice(&features[i * dim..(i + 1) * dim]);
            }
            x
        };
        let (scaler, train_x) = StandardScaler::fit_transform(&gather(parts[0]), dim)?;
        for (p, idx) in parts.iter().enumerate() {
            let scaled = if p == 0 {
                train_x.clone()
            } else {
                scaler.transform(&gather(idx))?
            };
            for r in 0..idx.len() {
                let to = (r * n_layers + l) * dim;
                stacked[p][to..to + dim].copy_from_slice(&scaled[r * dim..(r + 1) * dim]);
            }
        }
    }
    let part_labels = |idx: &[usize]| -> Vec<usize> { idx.iter().map(|&i| labels[i]).collect() };
    let (train_y, valid_y, test_y) = (
        part_labels(parts[0]),
        part_labels(parts[1]),
        part_labels(parts[2]),
    );
    let seed = opts.config.seed + job.run as u64;
    let config = TrainConfig {
        seed,
        threads: 1,
        ..opts.config.clone()
    };
    let width = n_layers * dim;
    let train_data = ProbeData::new(&stacked[0], &train_y, width)?;
    let valid_data = if valid_y.is_empty() {
        None
    } else {
        Some(ProbeData::new(&stacked[1], &valid_y, width)?)
    };
    let started = std::time::Instant::now();
    let trained = Trainer::new(config).train_weighted(
        job.probe.2,
        n_layers,
        n_classes,
        &train_data,
        valid_data.as_ref(),
        |_| {
            progress.inc(1);
            ControlFlow::Continue(())
        },
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let y_pred = trained.model.predict(&stacked[2])?;
    let report = ClassificationReport::compute(&test_y, &y_pred, n_classes)?;
    let eval = Evaluation {
        fold: job.fold.name.clone(),
        run: job.run,
        seed,
        accuracy: report.accuracy,
        macro_f1: report.macro_avg.f1,
        balanced_accuracy: report.balanced_accuracy,
        best_epoch: trained.best_epoch,
        sizes: [train_y.len(), valid_y.len(), test_y.len()],
    };
    Ok(JobResult {
        report,
        y_true: test_y,
        y_pred,
        eval,
        seconds,
        checkpoint: None,
        layer_weights: Some(trained.model.layer_weights()),
    })
}

fn aggregate(
    task: &dyn Task,
    results: &[&JobResult],
    folds: &[FoldSplit],
    store: &FeatureStore,
) -> Result<ProbeResults> {
    let n_classes = store.class_names.len();
    let values = |f: fn(&Evaluation) -> f64| -> Result<MeanStd> {
        let all: Vec<f64> = results.iter().map(|r| f(&r.eval)).collect();
        let mut ms = MeanStd::from_values(&all)?;
        ms.per_fold = folds
            .iter()
            .map(|fold| {
                let v: Vec<f64> = results
                    .iter()
                    .filter(|r| r.eval.fold == fold.name)
                    .map(|r| f(&r.eval))
                    .collect();
                v.iter().sum::<f64>() / v.len().max(1) as f64
            })
            .collect();
        Ok(ms)
    };
    let mut y_true = Vec::new();
    let mut y_pred = Vec::new();
    let mut cm = metrics::ConfusionMatrix::zeros(n_classes);
    for r in results {
        y_true.extend_from_slice(&r.y_true);
        y_pred.extend_from_slice(&r.y_pred);
        cm.add(&r.report.confusion_matrix);
    }
    let pooled = ClassificationReport::compute(&y_true, &y_pred, n_classes)?
        .with_class_names(&store.class_names)?;
    Ok(ProbeResults {
        accuracy: values(|e| e.accuracy)?,
        macro_f1: values(|e| e.macro_f1)?,
        balanced_accuracy: values(|e| e.balanced_accuracy)?,
        evaluations: results.iter().map(|r| r.eval.clone()).collect(),
        confusion_matrix: cm.counts.clone(),
        classes: store.class_names.clone(),
        per_class: pooled.per_class,
        task_metrics: task.extra_metrics(&y_true, &y_pred, &store.class_names),
        train_seconds: results.iter().map(|r| r.seconds).sum::<f64>() / results.len().max(1) as f64,
    })
}

/// Draws the plots of the module docs of [`crate::figures`]; returns their file names.
fn write_figures(
    task: &dyn Task,
    store: &FeatureStore,
    opts: &TrainOptions,
    per_layer: &[(usize, LayerResults)],
    reported_pos: usize,
    layer_weights: &[(String, Vec<f64>, Vec<f64>)],
) -> Result<Vec<String>> {
    let dir = &opts.results_dir;
    let name = task.name();
    let (_, final_layer) = per_layer.last().context("no layer trained")?;
    let layer = layer_label(store, reported_pos).to_string();
    let probes: Vec<crate::figures::Confusion<'_>> = final_layer
        .iter()
        .map(|(k, r)| crate::figures::Confusion {
            key: k,
            classes: &r.classes,
            counts: &r.confusion_matrix,
        })
        .collect();
    let mut written = crate::figures::confusion_plots(dir, &name, &layer, &probes)?;
    if per_layer.len() > 1 {
        let labels: Vec<String> = per_layer
            .iter()
            .map(|(pos, _)| layer_label(store, *pos).to_string())
            .collect();
        let series = final_layer
            .iter()
            .enumerate()
            .map(|(k, (key, _))| {
                let acc = |f: fn(&MeanStd) -> f64| {
                    per_layer
                        .iter()
                        .map(|(_, l)| f(&l[k].1.accuracy))
                        .collect::<Vec<f64>>()
                };
                (key.clone(), acc(|m| m.mean), acc(|m| m.std))
            })
            .collect();
        written.push(crate::figures::per_layer_plot(dir, &name, &labels, series)?);
    }
    let all_labels: Vec<String> = (0..store.num_layers)
        .map(|l| layer_label(store, l).to_string())
        .collect();
    for (probe, mean, _) in layer_weights {
        written.push(crate::figures::layer_weights_plot(
            dir,
            &name,
            probe,
            &all_labels,
            mean,
        )?);
    }
    let (features, what) = if reported_pos == WEIGHTED_LAYER {
        let (probe, mean, _) = layer_weights.first().context("no layer weights")?;
        (
            weighted_features(store, mean)?,
            format!("layers weighted as learned by the {probe} probe"),
        )
    } else {
        (
            store.layer(reported_pos)?,
            format!("layer {}", layer_label(store, reported_pos)),
        )
    };
    written.push(crate::figures::tsne_plot(
        dir, &name, store, &features, &what,
    )?);
    written.push(crate::figures::umap_plot(
        dir, &name, store, &features, &what,
    )?);
    Ok(written)
}

/// Every item's `Σ_l w_l standardise(layer_l)` (each layer standardised over all items).
fn weighted_features(store: &FeatureStore, weights: &[f64]) -> Result<Vec<f32>> {
    let mut out = vec![0.0_f32; store.len() * store.dim];
    for (l, &w) in weights.iter().enumerate() {
        let layer = store.layer(l)?;
        let (_, scaled) = StandardScaler::fit_transform(&layer, store.dim)?;
        for (o, v) in out.iter_mut().zip(&scaled) {
            *o += w as f32 * v;
        }
    }
    Ok(out)
}

fn layer_label(store: &FeatureStore, pos: usize) -> serde_json::Value {
    if pos == WEIGHTED_LAYER {
        return serde_json::json!("weighted");
    }
    store
        .provenance
        .layer_indices
        .get(pos)
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

fn results_json(
    task: &dyn Task,
    store: &FeatureStore,
    opts: &TrainOptions,
    folds: &[FoldSplit],
    per_layer: &[(usize, LayerResults)],
    saved: &[String],
) -> Result<serde_json::Value> {
    let (final_pos, final_layer) = per_layer.last().context("no layer trained")?;
    let probes: serde_json::Map<String, serde_json::Value> = final_layer
        .iter()
        .map(|(k, r)| Ok((k.clone(), serde_json::to_value(r)?)))
        .collect::<Result<_>>()?;
    let mut value = serde_json::json!({
        "task": task.name(),
        "description": task.description(),
        "protocol": {
            "name": protocol_name(&opts.protocol),
            "description": opts.protocol.describe(),
            "spec": opts.protocol,
            "folds": folds.iter().map(|f| serde_json::json!({
                "name": f.name, "train": f.train.len(), "valid": f.valid.len(), "test": f.test.len()
            })).collect::<Vec<_>>(),
            "val_fraction": opts.val_fraction,
            "runs": opts.runs,
            "scaler": "StandardScaler fit on each training part only",
        },
        "hyperparameters": {
            "epochs": opts.config.epochs,
            "batch_size": opts.config.batch_size,
            "learning_rate": opts.config.learning_rate,
            "optimizer": "Adam",
            "betas": [opts.config.beta1, opts.config.beta2],
            "eps": opts.config.eps,
            "weight_decay": opts.config.weight_decay,
            "seed": opts.config.seed,
            "mlp_hidden": probe_heads::DEFAULT_HIDDEN,
        },
        "features": {
            "path": store.path.display().to_string(),
            "sha256": store.sha256(),
            "model": store.provenance.model,
            "revision": store.provenance.revision,
            "layers_stored": store.provenance.layers,
            "layer": layer_label(store, *final_pos),
            "pooling": "mean",
            "dim": store.dim,
            "items": store.len(),
            "skipped": store.skipped,
            "padded": store.padded.len(),
        },
        "probes": probes,
        "saved_probes": saved,
    });
    if per_layer.len() > 1 {
        value["per_layer"] = per_layer
            .iter()
            .map(|(pos, layer)| {
                let mut entry = serde_json::json!({ "layer": layer_label(store, *pos) });
                for (k, r) in layer {
                    entry[k] = serde_json::json!({
                        "accuracy": r.accuracy.mean, "accuracy_std": r.accuracy.std,
                        "macro_f1": r.macro_f1.mean,
                    });
                }
                entry
            })
            .collect();
    }
    Ok(value)
}

/// `official`, `random`, ...: the `--split` value that reproduces a protocol.
pub fn protocol_name(p: &Protocol) -> &'static str {
    match p {
        Protocol::PredefinedFolds | Protocol::PredefinedSplit => "official",
        Protocol::Random { .. } => "random",
        Protocol::GroupRandom { .. } => "group-random",
    }
}

fn write_confusion_csv(path: &Path, r: &ProbeResults) -> Result<()> {
    let quote = |s: &str| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let mut out = String::from("true\\predicted");
    for c in &r.classes {
        out.push(',');
        out.push_str(&quote(c));
    }
    out.push('\n');
    for (c, row) in r.classes.iter().zip(&r.confusion_matrix) {
        out.push_str(&quote(c));
        for v in row {
            out.push_str(&format!(",{v}"));
        }
        out.push('\n');
    }
    hubert_core::store::atomic_write(path, out.as_bytes())?;
    Ok(())
}

/// The human-readable report.
pub fn report_markdown(
    task: &dyn Task,
    store: &FeatureStore,
    opts: &TrainOptions,
    per_layer: &[(usize, LayerResults)],
    saved: &[String],
    figures: &[String],
) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let (final_pos, final_layer) = per_layer.last().expect("at least one layer");
    let _ = writeln!(s, "# {} — {}\n", task.name(), task.description());
    let _ = writeln!(
        s,
        "- Protocol: {} ({} runs per fold)",
        opts.protocol.describe(),
        opts.runs
    );
    let _ = writeln!(
        s,
        "- Features: `{}` — model `{}`, layer {}, mean pooling, {} items x {} dims{}",
        store.path.display(),
        store.provenance.model,
        layer_label(store, *final_pos),
        store.len(),
        store.dim,
        if store.skipped.is_empty() {
            String::new()
        } else {
            format!(", {} skipped (undecodable)", store.skipped.len())
        }
    );
    let _ = writeln!(
        s,
        "- Training: Adam lr {}, batch {}, {} epochs, seed {}; StandardScaler fit on each training part\n",
        opts.config.learning_rate, opts.config.batch_size, opts.config.epochs, opts.config.seed
    );
    let _ = writeln!(
        s,
        "| probe | accuracy (mean ± std) | macro-F1 (mean ± std) | per fold accuracy |"
    );
    let _ = writeln!(s, "|---|---|---|---|");
    for (k, r) in final_layer {
        let folds: Vec<String> = r
            .accuracy
            .per_fold
            .iter()
            .map(|v| format!("{:.3}", v))
            .collect();
        let _ = writeln!(
            s,
            "| {k} | {:.4} ± {:.4} | {:.4} ± {:.4} | {} |",
            r.accuracy.mean,
            r.accuracy.std,
            r.macro_f1.mean,
            r.macro_f1.std,
            folds.join(", ")
        );
    }
    for (k, r) in final_layer {
        if let Some(m) = &r.task_metrics {
            let _ = writeln!(s, "\n{k} task metrics: `{m}`");
        }
    }
    if per_layer.len() > 1 {
        let _ = writeln!(s, "\n## Per layer\n");
        let keys: Vec<&String> = final_layer.iter().map(|(k, _)| k).collect();
        let _ = writeln!(
            s,
            "| layer | {} |\n|---|{}",
            keys.iter()
                .map(|k| format!("{k} accuracy"))
                .collect::<Vec<_>>()
                .join(" | "),
            "---|".repeat(keys.len())
        );
        for (pos, layer) in per_layer {
            let cells: Vec<String> = layer
                .iter()
                .map(|(_, r)| format!("{:.4} ± {:.4}", r.accuracy.mean, r.accuracy.std))
                .collect();
            let _ = writeln!(
                s,
                "| {} | {} |",
                layer_label(store, *pos),
                cells.join(" | ")
            );
        }
    }
    if let Some((k, r)) = final_layer.last() {
        let _ = writeln!(s, "\n## Per class ({k})\n");
        let _ = writeln!(
            s,
            "| class | precision | recall | F1 | support |\n|---|---|---|---|---|"
        );
        for c in &r.per_class {
            let _ = writeln!(
                s,
                "| {} | {:.3} | {:.3} | {:.3} | {} |",
                c.name, c.precision, c.recall, c.f1, c.support
            );
        }
    }
    let _ = writeln!(
        s,
        "\nConfusion matrices (summed over folds and runs, rows = true class): {}",
        final_layer
            .iter()
            .map(|(k, _)| format!("`confusion_{k}.csv`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !figures.is_empty() {
        let _ = writeln!(s, "\n## Plots\n");
        for f in figures {
            let _ = writeln!(s, "![{f}]({f})");
        }
    }
    if !saved.is_empty() {
        let _ = writeln!(
            s,
            "\nSaved probes (first fold, first run, with its scaler): {}",
            saved
                .iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    s
}

fn progress_bar(len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "train {spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} epochs ETA {eta}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar
}
