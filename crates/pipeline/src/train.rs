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
//! `predictions_<probe>.csv` next to it holds every test prediction of the reported layer.
//!
//! # Macro-F1
//!
//! Each evaluation's macro-F1 is scikit-learn's `f1_score(y_true, y_pred, average="macro")`
//! (see [`metrics::ClassificationReport::macro_avg`]): the mean F1 over the classes that occur
//! in that evaluation's test labels or predictions. A class with neither is *absent*: it is
//! left out of the mean, listed in the evaluation's `absent_classes`, and its pooled per-class
//! row (if absent from every evaluation) has `"absent": true` and `null` precision, recall and
//! F1. `macro_f1_all_classes` keeps the mean over every class name (absent classes counted as
//! 0) for comparison. A class predicted without test items is present, with F1 0, as in
//! scikit-learn; report.md names both kinds, and the classes a split part has no item of.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use metrics::{ClassificationReport, MeanStd};
use probe_heads::{Checkpoint, Dataset as ProbeData, ProbeKind, TrainConfig, Trainer};
use rayon::prelude::*;
use results::Results;
use scaler::StandardScaler;
use serde::{Deserialize, Serialize};

use crate::protocol::{splits, FoldSplit, Protocol};
use crate::store::{FeatureStore, Pooling};
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

/// `--layer`: which stored features a probe trains on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayerChoice {
    /// The last stored layer (`last_hidden_state` when stored).
    #[default]
    Last,
    /// Hidden state `N` (must be stored).
    Index(usize),
    /// One probe per stored layer (per-layer curves).
    All,
    /// A learned softmax-weighted sum of every stored layer (SUPERB's featurizer).
    Weighted,
}

impl std::str::FromStr for LayerChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "last" => Ok(Self::Last),
            "all" => Ok(Self::All),
            "weighted" => Ok(Self::Weighted),
            n => n.parse().map(Self::Index).map_err(|_| {
                format!("expected last, all, weighted or a hidden-state index, got {s:?}")
            }),
        }
    }
}

impl std::fmt::Display for LayerChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Last => f.write_str("last"),
            Self::Index(i) => write!(f, "{i}"),
            Self::All => f.write_str("all"),
            Self::Weighted => f.write_str("weighted"),
        }
    }
}

impl LayerChoice {
    /// Whether this choice needs every hidden state stored (`extract --layers all`).
    pub fn needs_all_layers(self) -> bool {
        self != Self::Last
    }

    /// Checks a hidden-state index against a model with `num_hidden_layers` layers.
    pub fn validate(self, num_hidden_layers: usize) -> Result<()> {
        if let Self::Index(i) = self {
            if i > num_hidden_layers {
                bail!(
                    "--layer {i} out of range: the model has {} hidden states (0..={num_hidden_layers})",
                    num_hidden_layers + 1
                );
            }
        }
        Ok(())
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
    pub layer: LayerChoice,
    /// Fraction of each training part held out (group-disjoint) for best-epoch selection.
    pub val_fraction: f64,
    /// The item vector per layer: frame mean, max, or mean and std concatenated.
    pub pooling: Pooling,
    /// `results/<task>/<slug>` ([`crate::naming::results_dir`]).
    pub results_dir: PathBuf,
    /// Where the probes are saved (`models/`).
    pub models_dir: PathBuf,
    /// The model's slug: names the saved probes ([`crate::naming::probe_path`]) and is recorded
    /// in results.json and report.md.
    pub slug: String,
    /// Draw the PNG plots (confusion matrices, t-SNE, per-layer accuracy) next to results.json.
    pub plots: bool,
}

pub use results::{Evaluation, ProbeResults};

/// Results of one layer: probe name -> results.
pub type LayerResults = Vec<(String, ProbeResults)>;

/// Everything `train` produced.
#[derive(Debug)]
pub struct TrainOutcome {
    /// What results.json holds.
    pub results: Results,
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

impl Job<'_> {
    /// `the mlp probe, fold fold2, run 1 (seed 43)`: where a training error happened.
    fn describe(&self, seed: u64) -> String {
        format!(
            "training the {} probe, fold {}, run {} (seed {seed})",
            self.probe.0, self.fold.name, self.run
        )
    }
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

impl JobResult {
    /// Scores a job's test predictions: the classification report and the results.json
    /// evaluation (absent classes named). Timing, checkpoint and layer weights are the caller's.
    fn score(
        job: &Job<'_>,
        seed: u64,
        class_names: &[String],
        sizes: [usize; 3],
        best_epoch: Option<usize>,
        y_true: Vec<usize>,
        y_pred: Vec<usize>,
    ) -> Result<Self> {
        let report = ClassificationReport::compute(&y_true, &y_pred, class_names.len())?;
        let eval = Evaluation {
            fold: job.fold.name.clone(),
            run: job.run,
            seed,
            accuracy: report.accuracy,
            macro_f1: report.macro_avg.f1,
            balanced_accuracy: report.balanced_accuracy,
            best_epoch,
            sizes,
            absent_classes: report
                .absent_classes
                .iter()
                .map(|&c| class_names[c].clone())
                .collect(),
        };
        Ok(Self {
            report,
            y_true,
            y_pred,
            eval,
            seconds: 0.0,
            checkpoint: None,
            layer_weights: None,
        })
    }
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
    let weighted = opts.layer == LayerChoice::Weighted;
    let layer_positions: Vec<usize> = if matches!(opts.layer, LayerChoice::All) || weighted {
        (0..store.num_layers).collect()
    } else {
        vec![store.resolve_layer(opts.layer)?]
    };
    let probes = opts.probe.probes();
    let layer_features: Vec<Vec<f32>> = layer_positions
        .iter()
        .map(|&p| store.pooled(p, opts.pooling))
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
    let progress = terminal::count_bar((jobs.len() * opts.config.epochs) as u64, "train", "epochs");
    let dim = store.dim * opts.pooling.stats().len();
    let results: Vec<JobResult> = jobs
        .par_iter()
        .map(|job| {
            if weighted {
                return run_weighted_job(
                    job,
                    &layer_features,
                    &labels,
                    dim,
                    &store.class_names,
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
            let path =
                crate::naming::probe_path(&opts.models_dir, &task.name(), &opts.slug, job.probe.1);
            ckpt.save(&path)
                .with_context(|| format!("cannot save probe {}", path.display()))?;
            let scaler_path =
                crate::naming::scaler_path(&opts.models_dir, &task.name(), &opts.slug);
            scaler
                .save(&scaler_path)
                .with_context(|| format!("cannot save scaler {}", scaler_path.display()))?;
            saved.push(path.display().to_string());
        }
    }

    std::fs::create_dir_all(&opts.results_dir)
        .with_context(|| format!("cannot create {}", opts.results_dir.display()))?;
    let (final_pos, final_layer) = &per_layer[reported];
    let mut predictions = Vec::new();
    for (key, r) in final_layer {
        write_confusion_csv(&opts.results_dir.join(format!("confusion_{key}.csv")), r)?;
        let name = format!("predictions_{key}.csv");
        let rows = jobs
            .iter()
            .zip(&results)
            .filter(|(j, _)| j.layer_pos == reported && j.probe.0 == key);
        write_predictions_csv(&opts.results_dir.join(&name), store, rows)?;
        predictions.push((key.clone(), name));
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
    let mut results = results_summary(task, store, opts, &folds, &per_layer, &saved)?;
    results.plots = figures.clone();
    results.predictions = predictions.into_iter().collect();
    if weighted {
        let labels: Vec<serde_json::Value> = (0..store.num_layers)
            .map(|l| layer_label(store, l))
            .collect();
        results.layer_weights = Some(
            layer_weights
                .iter()
                .map(|(key, mean, std)| {
                    (
                        key.clone(),
                        results::LayerWeights {
                            layers: labels.clone(),
                            mean: mean.clone(),
                            std: std.clone(),
                        },
                    )
                })
                .collect(),
        );
        results.layer_weighting = Some(
            "softmax-weighted sum of every stored layer, weights learned jointly with the probe \
             (Adam, logits initialised to 0); each layer standardised by its own StandardScaler \
             fit on the training part, before the sum"
                .to_string(),
        );
    }
    let results_path = opts.results_dir.join("results.json");
    results.write(&results_path)?;
    let report_path = opts.results_dir.join("report.md");
    artifacts::atomic_write(
        &report_path,
        crate::train::report_markdown(task, store, opts, &folds, &per_layer, &saved, &figures)
            .as_bytes(),
    )?;
    Ok(TrainOutcome {
        results,
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
    let trained = Trainer::new(config.clone())
        .train(
            job.probe.2,
            n_classes,
            &train_data,
            valid_data.as_ref(),
            |_| {
                progress.inc(1);
                ControlFlow::Continue(())
            },
        )
        .with_context(|| job.describe(seed))?;
    let seconds = started.elapsed().as_secs_f64();
    let y_pred = trained.model.predict(&test_x)?;
    let sizes = [train_y.len(), valid_y.len(), test_y.len()];
    let mut result = JobResult::score(
        job,
        seed,
        class_names,
        sizes,
        trained.best_epoch,
        test_y,
        y_pred,
    )?;
    result.seconds = seconds;
    let is_first = job.run == 0 && job.fold_index == 0;
    let checkpoint = is_first.then(|| {
        let mut ckpt = Checkpoint::new(trained.model.clone());
        ckpt.class_names = class_names.to_vec();
        ckpt.hyperparameters = Some(config.clone());
        ckpt.best_epoch = trained.best_epoch;
        (ckpt, scaler.clone())
    });
    result.checkpoint = checkpoint;
    Ok(result)
}

/// A `--layer weighted` job: one StandardScaler per layer (fit on the training part), items as
/// `[L * D]` rows, layer weights and probe trained jointly. Not saved as a checkpoint (the
/// checkpoint format holds one probe on one layer).
fn run_weighted_job(
    job: &Job<'_>,
    layers: &[Vec<f32>],
    labels: &[usize],
    dim: usize,
    class_names: &[String],
    opts: &TrainOptions,
    progress: &ProgressBar,
) -> Result<JobResult> {
    let n_classes = class_names.len();
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
    let trained = Trainer::new(config)
        .train_weighted(
            job.probe.2,
            n_layers,
            n_classes,
            &train_data,
            valid_data.as_ref(),
            |_| {
                progress.inc(1);
                ControlFlow::Continue(())
            },
        )
        .with_context(|| job.describe(seed))?;
    let seconds = started.elapsed().as_secs_f64();
    let y_pred = trained.model.predict(&stacked[2])?;
    let sizes = [train_y.len(), valid_y.len(), test_y.len()];
    let mut result = JobResult::score(
        job,
        seed,
        class_names,
        sizes,
        trained.best_epoch,
        test_y,
        y_pred,
    )?;
    result.seconds = seconds;
    result.layer_weights = Some(trained.model.layer_weights());
    Ok(result)
}

fn aggregate(
    task: &dyn Task,
    results: &[&JobResult],
    folds: &[FoldSplit],
    store: &FeatureStore,
) -> Result<ProbeResults> {
    let n_classes = store.class_names.len();
    let values = |f: fn(&JobResult) -> f64| -> Result<MeanStd> {
        let all: Vec<f64> = results.iter().map(|r| f(r)).collect();
        let mut ms = MeanStd::from_values(&all)?;
        ms.per_fold = folds
            .iter()
            .map(|fold| {
                let v: Vec<f64> = results
                    .iter()
                    .filter(|r| r.eval.fold == fold.name)
                    .map(|r| f(r))
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
        accuracy: values(|r| r.eval.accuracy)?,
        macro_f1: values(|r| r.eval.macro_f1)?,
        macro_f1_all_classes: Some(values(|r| r.report.macro_avg_all_classes.f1)?),
        balanced_accuracy: values(|r| r.eval.balanced_accuracy)?,
        evaluations: results.iter().map(|r| r.eval.clone()).collect(),
        confusion_matrix: cm.counts.clone(),
        classes: store.class_names.clone(),
        absent_classes: pooled.absent_class_names(),
        pooled_macro_avg: Some(pooled.macro_avg),
        pooled_weighted_avg: Some(pooled.weighted_avg),
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
        .and_then(|l| serde_json::to_value(l).ok())
        .unwrap_or(serde_json::Value::Null)
}

fn results_summary(
    task: &dyn Task,
    store: &FeatureStore,
    opts: &TrainOptions,
    folds: &[FoldSplit],
    per_layer: &[(usize, LayerResults)],
    saved: &[String],
) -> Result<Results> {
    let (final_pos, final_layer) = per_layer.last().context("no layer trained")?;
    let labels = store.labels();
    let n = store.class_names.len();
    let fold_summary = |f: &FoldSplit| results::FoldSummary {
        name: f.name.clone(),
        train: f.train.len(),
        valid: f.valid.len(),
        test: f.test.len(),
        classes_without_items: PARTS
            .iter()
            .zip(classes_without_items(f, &labels, n))
            .filter_map(|(part, missing)| {
                let names = missing?
                    .iter()
                    .map(|&c| store.class_names[c].clone())
                    .collect();
                Some((part.to_string(), names))
            })
            .collect(),
    };
    Ok(Results {
        task: task.name(),
        description: task.description(),
        protocol: results::ProtocolSummary {
            name: protocol_name(&opts.protocol).to_string(),
            description: opts.protocol.describe(),
            spec: serde_json::to_value(&opts.protocol)?,
            folds: folds.iter().map(fold_summary).collect(),
            val_fraction: opts.val_fraction,
            runs: opts.runs,
            scaler: "StandardScaler fit on each training part only".to_string(),
        },
        hyperparameters: results::Hyperparameters {
            epochs: opts.config.epochs,
            batch_size: opts.config.batch_size,
            learning_rate: opts.config.learning_rate,
            optimizer: "Adam".to_string(),
            betas: [opts.config.beta1, opts.config.beta2],
            eps: opts.config.eps,
            weight_decay: opts.config.weight_decay,
            seed: opts.config.seed,
            mlp_hidden: probe_heads::DEFAULT_HIDDEN,
        },
        features: results::FeaturesSummary {
            path: store.path.display().to_string(),
            sha256: store.sha256(),
            model: store.provenance.model.clone(),
            revision: store.provenance.revision.clone(),
            slug: Some(opts.slug.clone()),
            family: store.provenance.family.clone(),
            layers_stored: store.provenance.layers.clone(),
            layer: layer_label(store, *final_pos),
            pooling: opts.pooling.name().to_string(),
            dim: store.dim * opts.pooling.stats().len(),
            items: store.len(),
            skipped: store
                .skipped
                .iter()
                .map(|s| results::SkippedItem {
                    index: s.index,
                    path: s.path.clone(),
                    error: s.error.clone(),
                })
                .collect(),
            padded: store.padded.len(),
        },
        probes: final_layer.iter().cloned().collect(),
        saved_probes: saved.to_vec(),
        plots: Vec::new(),
        predictions: Default::default(),
        per_layer: (per_layer.len() > 1).then(|| {
            per_layer
                .iter()
                .map(|(pos, layer)| results::LayerEntry {
                    layer: layer_label(store, *pos),
                    probes: layer
                        .iter()
                        .map(|(k, r)| {
                            (
                                k.clone(),
                                results::LayerScore {
                                    accuracy: r.accuracy.mean,
                                    accuracy_std: r.accuracy.std,
                                    macro_f1: r.macro_f1.mean,
                                },
                            )
                        })
                        .collect(),
                })
                .collect()
        }),
        layer_weights: None,
        layer_weighting: None,
    })
}

/// The parts of a fold, in [`classes_without_items`] order.
const PARTS: [&str; 3] = ["train", "valid", "test"];

/// For the train, valid and test parts of `fold`: the classes (of `0..n_classes`) with no item
/// there, or `None` for an empty part (no validation part).
fn classes_without_items(
    fold: &FoldSplit,
    labels: &[usize],
    n_classes: usize,
) -> [Option<Vec<usize>>; 3] {
    [&fold.train, &fold.valid, &fold.test].map(|idx| {
        if idx.is_empty() {
            return None;
        }
        let mut seen = vec![false; n_classes];
        for &i in idx.iter() {
            seen[labels[i]] = true;
        }
        Some((0..n_classes).filter(|&c| !seen[c]).collect())
    })
}

/// `a`, `a or b`, `a, b or c`.
fn or_list(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => one.to_string(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

/// Sentences naming the classes a split part has no item of: classes with no item in the store
/// at all, then e.g. "synth_lead has no valid or test items" (per fold where folds differ).
fn split_gap_lines(folds: &[FoldSplit], labels: &[usize], class_names: &[String]) -> Vec<String> {
    let n = class_names.len();
    let mut count = vec![0usize; n];
    for &l in labels {
        count[l] += 1;
    }
    let mut lines = Vec::new();
    let nowhere: Vec<&str> = (0..n)
        .filter(|&c| count[c] == 0)
        .map(|c| class_names[c].as_str())
        .collect();
    if !nowhere.is_empty() {
        lines.push(format!("no items at all: {}", nowhere.join(", ")));
    }
    let gaps: Vec<[Option<Vec<usize>>; 3]> = folds
        .iter()
        .map(|f| classes_without_items(f, labels, n))
        .collect();
    for c in (0..n).filter(|&c| count[c] > 0) {
        // (parts without class c, folds) in first-seen order.
        let mut groups: Vec<(Vec<&str>, Vec<&str>)> = Vec::new();
        for (fold, parts) in folds.iter().zip(&gaps) {
            let missing: Vec<&str> = PARTS
                .iter()
                .zip(parts)
                .filter(|(_, m)| m.as_ref().is_some_and(|m| m.contains(&c)))
                .map(|(p, _)| *p)
                .collect();
            if missing.is_empty() {
                continue;
            }
            match groups.iter_mut().find(|(m, _)| *m == missing) {
                Some((_, f)) => f.push(&fold.name),
                None => groups.push((missing, vec![&fold.name])),
            }
        }
        let name = &class_names[c];
        match groups.as_slice() {
            [] => {}
            [(parts, f)] if f.len() == folds.len() => lines.push(format!(
                "{name} has no {} items{}",
                or_list(parts),
                if folds.len() > 1 { " in any fold" } else { "" }
            )),
            _ => {
                let each: Vec<String> = groups
                    .iter()
                    .map(|(parts, f)| {
                        let f: Vec<String> = f.iter().map(|f| format!("`{f}`")).collect();
                        format!("no {} items in fold {}", or_list(parts), f.join(", "))
                    })
                    .collect();
                lines.push(format!("{name} has {}", each.join("; ")));
            }
        }
    }
    lines
}

/// "a, b (every evaluation)" or "a in fold `1` run 0; b in fold `2` run 1" for the absent
/// classes of a probe's evaluations; `None` when no evaluation has an absent class.
fn absent_text(evaluations: &[Evaluation]) -> Option<String> {
    let mut groups: Vec<(&Vec<String>, Vec<String>)> = Vec::new();
    for e in evaluations {
        let at = format!("fold `{}` run {}", e.fold, e.run);
        match groups.iter_mut().find(|(a, _)| **a == e.absent_classes) {
            Some((_, at_list)) => at_list.push(at),
            None => groups.push((&e.absent_classes, vec![at])),
        }
    }
    if groups.iter().all(|(a, _)| a.is_empty()) {
        return None;
    }
    if let [(absent, _)] = groups.as_slice() {
        return Some(format!("{} (every evaluation)", absent.join(", ")));
    }
    const SHOWN: usize = 8;
    let parts: Vec<String> = groups
        .iter()
        .filter(|(a, _)| !a.is_empty())
        .map(|(a, at)| {
            let more = at.len().saturating_sub(SHOWN);
            let mut list = at[..at.len().min(SHOWN)].join(", ");
            if more > 0 {
                list.push_str(&format!(" and {more} more"));
            }
            format!("{} in {list}", a.join(", "))
        })
        .collect();
    Some(parts.join("; "))
}

/// Writes `predictions_<probe>.csv`: one row per test prediction of every fold x run, with the
/// item's row in the feature store, its path, and the true and predicted label and class.
fn write_predictions_csv<'a>(
    path: &Path,
    store: &FeatureStore,
    rows: impl Iterator<Item = (&'a Job<'a>, &'a JobResult)>,
) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "fold",
        "run",
        "seed",
        "item",
        "path",
        "true_label",
        "predicted_label",
        "true_class",
        "predicted_class",
    ])?;
    for (job, r) in rows {
        for ((&item, &t), &p) in job.fold.test.iter().zip(&r.y_true).zip(&r.y_pred) {
            w.write_record([
                job.fold.name.as_str(),
                &job.run.to_string(),
                &r.eval.seed.to_string(),
                &item.to_string(),
                &store.items[item].path,
                &t.to_string(),
                &p.to_string(),
                &store.class_names[t],
                &store.class_names[p],
            ])?;
        }
    }
    let bytes = w
        .into_inner()
        .map_err(|e| anyhow::anyhow!("cannot write {}: {}", path.display(), e.error()))?;
    artifacts::atomic_write(path, &bytes)?;
    Ok(())
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
    artifacts::atomic_write(path, out.as_bytes())?;
    Ok(())
}

/// The human-readable report.
pub fn report_markdown(
    task: &dyn Task,
    store: &FeatureStore,
    opts: &TrainOptions,
    folds: &[FoldSplit],
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
        "- Model: `{}` — slug `{}`, family {}, revision {}",
        store.provenance.model,
        opts.slug,
        store.provenance.family.as_deref().unwrap_or("not recorded"),
        store
            .provenance
            .revision
            .as_deref()
            .unwrap_or("not recorded"),
    );
    let _ = writeln!(
        s,
        "- Features: `{}` — layer {}, {} pooling, {} items x {} dims{}",
        store.path.display(),
        layer_label(store, *final_pos),
        opts.pooling,
        store.len(),
        store.dim * opts.pooling.stats().len(),
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
    let _ = writeln!(
        s,
        "\nMacro-F1 is scikit-learn's `f1_score(average=\"macro\")` per evaluation: the mean F1 \
         over the classes in its test labels or predictions. A class with neither is absent and \
         left out of the mean."
    );
    let gaps = split_gap_lines(folds, &store.labels(), &store.class_names);
    if !gaps.is_empty() {
        let _ = writeln!(s, "\nClasses missing from the split:\n");
        for line in &gaps {
            let _ = writeln!(s, "- {line}");
        }
    }
    let absent: Vec<(&String, String)> = final_layer
        .iter()
        .filter_map(|(k, r)| Some((k, absent_text(&r.evaluations)?)))
        .collect();
    if !absent.is_empty() {
        let _ = writeln!(
            s,
            "\nAbsent (no test item, never predicted), left out of macro-F1:\n"
        );
        for (k, text) in &absent {
            let _ = writeln!(s, "- {k}: {text}");
        }
        let all: Vec<String> = final_layer
            .iter()
            .filter_map(|(k, r)| {
                let m = r.macro_f1_all_classes.as_ref()?;
                Some(format!("{k} {:.4} ± {:.4}", m.mean, m.std))
            })
            .collect();
        let _ = writeln!(
            s,
            "\nFor comparison, the mean F1 over all {} class names, absent ones counted as 0 \
             (`labels=range({})`, `macro_f1_all_classes`): {}.",
            store.class_names.len(),
            store.class_names.len(),
            all.join(", ")
        );
    }
    for (k, r) in final_layer {
        // Present but with no test item: recall undefined (0), F1 0 in the mean.
        let untrue: Vec<String> = (0..r.classes.len())
            .filter(|&c| r.confusion_matrix[c].iter().sum::<u64>() == 0)
            .filter_map(|c| {
                let predicted: u64 = r.confusion_matrix.iter().map(|row| row[c]).sum();
                (predicted > 0).then(|| format!("{} ({predicted}x)", r.classes[c]))
            })
            .collect();
        if !untrue.is_empty() {
            let _ = writeln!(
                s,
                "\n{k}: predicted without test items, so in the macro mean with F1 0 (as \
                 scikit-learn): {}",
                untrue.join(", ")
            );
        }
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
        let score = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.3}"));
        for c in &r.per_class {
            let _ = writeln!(
                s,
                "| {}{} | {} | {} | {} | {} |",
                c.name,
                if c.absent { " (absent)" } else { "" },
                score(c.precision),
                score(c.recall),
                score(c.f1),
                c.support
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
    let _ = writeln!(
        s,
        "\nEvery test prediction (fold, run, seed, store row, path, true and predicted class): {}",
        final_layer
            .iter()
            .map(|(k, _)| format!("`predictions_{k}.csv`"))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fold(name: &str, train: &[usize], valid: &[usize], test: &[usize]) -> FoldSplit {
        FoldSplit {
            name: name.into(),
            train: train.to_vec(),
            valid: valid.to_vec(),
            test: test.to_vec(),
        }
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn split_gaps_name_classes_missing_from_a_part() {
        // Labels of items 0..7: class 2 only in training items, class 3 nowhere.
        let labels = [0, 1, 2, 0, 1, 0, 1];
        let classes = names(&["a", "b", "lead", "none"]);
        let official = [fold("test", &[0, 1, 2], &[3, 4], &[5, 6])];
        assert_eq!(
            classes_without_items(&official[0], &labels, 4),
            [Some(vec![3]), Some(vec![2, 3]), Some(vec![2, 3])]
        );
        assert_eq!(
            split_gap_lines(&official, &labels, &classes),
            ["no items at all: none", "lead has no valid or test items"]
        );
        // No validation part: it is not reported as missing every class.
        let cv = [
            fold("1", &[0, 1, 2], &[], &[3, 4]),
            fold("2", &[3, 4, 5], &[], &[0, 1, 2]),
        ];
        assert_eq!(classes_without_items(&cv[0], &labels, 4)[1], None);
        assert_eq!(
            split_gap_lines(&cv, &labels, &classes),
            [
                "no items at all: none",
                "lead has no test items in fold `1`; no train items in fold `2`"
            ]
        );
        assert_eq!(or_list(&["train", "valid", "test"]), "train, valid or test");
    }

    #[test]
    fn absent_text_groups_evaluations() {
        let eval = |fold: &str, run: usize, absent: &[&str]| Evaluation {
            fold: fold.into(),
            run,
            seed: 42 + run as u64,
            accuracy: 1.0,
            macro_f1: 1.0,
            balanced_accuracy: 1.0,
            best_epoch: None,
            sizes: [1, 0, 1],
            absent_classes: names(absent),
        };
        assert_eq!(absent_text(&[eval("1", 0, &[]), eval("2", 0, &[])]), None);
        assert_eq!(
            absent_text(&[eval("test", 0, &["x", "y"]), eval("test", 1, &["x", "y"])]).unwrap(),
            "x, y (every evaluation)"
        );
        assert_eq!(
            absent_text(&[
                eval("1", 0, &["x"]),
                eval("2", 0, &[]),
                eval("3", 1, &["x"])
            ])
            .unwrap(),
            "x in fold `1` run 0, fold `3` run 1"
        );
    }

    #[test]
    fn results_written_before_absent_classes_still_load() {
        let old = serde_json::json!({
            "accuracy": {"mean": 0.5, "std": 0.0, "per_fold": [0.5]},
            "macro_f1": {"mean": 0.4, "std": 0.0, "per_fold": [0.4]},
            "balanced_accuracy": {"mean": 0.5, "std": 0.0, "per_fold": [0.5]},
            "evaluations": [{"fold": "test", "run": 0, "seed": 42, "accuracy": 0.5,
                             "macro_f1": 0.4, "balanced_accuracy": 0.5, "best_epoch": 3,
                             "sizes": [4, 2, 2]}],
            "confusion_matrix": [[1, 1], [0, 0]],
            "classes": ["a", "b"],
            "per_class": [
                {"class": 0, "name": "a", "precision": 1.0, "recall": 0.5, "f1": 0.667,
                 "support": 2},
                {"class": 1, "name": "b", "precision": 0.0, "recall": 0.0, "f1": 0.0,
                 "support": 0}
            ],
            "train_seconds": 0.1
        });
        let r: ProbeResults = serde_json::from_value(old).unwrap();
        assert!(r.macro_f1_all_classes.is_none() && r.absent_classes.is_empty());
        assert_eq!(r.per_class[1].f1, Some(0.0));
        assert!(r.evaluations[0].absent_classes.is_empty());
    }
}
