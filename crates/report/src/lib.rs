//! The cross-task report: reads every `<results-dir>/<task>/results.json` (the schema of the
//! `results` crate, which the task binaries write) and writes
//!
//! - `summary.md`, `summary.csv`, `summary.json`: one row per task and probe with accuracy and
//!   macro-F1 as mean ± std over folds x runs, the best probe per task (highest mean accuracy),
//!   and each task's protocol, layer and item count, like the original study's table. Macro-F1
//!   is results.json's `macro_f1`: scikit-learn's `f1_score(average="macro")` per evaluation,
//!   over the classes in its test labels or predictions; the classes left out (absent) are
//!   listed. A results.json written before that definition (no `macro_f1_all_classes`) still
//!   loads; its macro-F1, averaged over every class name, is marked `†`;
//! - `task_similarity.md`, `task_similarity.png`: for tasks trained with `--layer all`, the
//!   Pearson correlation of their per-layer accuracy profiles (the probes' mean accuracy at
//!   each hidden state): two tasks correlate when the same layers serve them well, whatever their
//!   absolute accuracy.
//!
//! ```no_run
//! let written = report::write_report(std::path::Path::new("results")).unwrap();
//! assert!(written.iter().any(|p| p.ends_with("summary.md")));
//! ```

#![warn(missing_docs)]

pub mod models;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One probe of one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeSummary {
    /// `linear`, `mlp`.
    pub probe: String,
    /// Mean test accuracy over folds x runs.
    pub accuracy_mean: f64,
    /// Sample standard deviation of the test accuracy over folds x runs.
    pub accuracy_std: f64,
    /// Mean macro-F1.
    pub macro_f1_mean: f64,
    /// Sample standard deviation of macro-F1.
    pub macro_f1_std: f64,
    /// Number of fold x run evaluations behind the figures.
    pub evaluations: usize,
    /// Classes absent from every evaluation (no test item, never predicted), left out of
    /// macro-F1.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub absent_classes: Vec<String>,
    /// `true` when results.json predates macro-F1 over the classes present: its `macro_f1`
    /// averages over every class name, absent classes counted as 0.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub macro_f1_over_all_class_names: bool,
    /// Task-specific metrics (ICBHI Se / Sp / score), when the task reports them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_metrics: Option<Value>,
}

/// One task's row group of the summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSummary {
    /// Task name (`esc50`).
    pub task: String,
    /// One-line description of the task.
    pub description: String,
    /// `official`, `random`, ...
    pub protocol: String,
    /// The protocol in words (`5-fold CV over ...`).
    pub protocol_description: String,
    /// Hidden state the probes were trained on (an index, `"weighted"`, ...).
    pub layer: Value,
    /// Items in the feature store.
    pub items: u64,
    /// Model id or path.
    pub model: String,
    /// The model family (`hubert`, `wav2vec2`, `wavlm`, `data2vec-audio`), when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// The model's hub revision, when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Every probe, in results.json order.
    pub probes: Vec<ProbeSummary>,
    /// The probe with the highest mean accuracy (the first one on a tie).
    pub best_probe: String,
    /// Per-layer profile (mean over the probes of the accuracy at each hidden state), with
    /// `--layer all`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_layer: Option<Vec<f64>>,
    /// Learned softmax layer weights per probe, with `--layer weighted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_weights: Option<Value>,
    /// The task's PNG plots, relative to the results folder.
    pub plots: Vec<String>,
    /// The model's slug: the folder name under `<task>/`, or, for a results.json directly in
    /// `<task>/` (written before model slugs), the one it records or its model id's
    /// ([`results::model_slug`]).
    #[serde(default)]
    pub slug: String,
    /// Per probe, its accuracy at each trained layer (`--layer all`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub layer_curves: BTreeMap<String, Vec<LayerPoint>>,
    /// The folder holding results.json, relative to the results folder (`esc50`,
    /// `esc50/wavlm-base-plus`).
    #[serde(default)]
    pub folder: String,
    /// Where results.json was read from (for its predictions CSVs).
    #[serde(skip)]
    pub dir: PathBuf,
    /// Probe -> its predictions CSV next to results.json.
    #[serde(skip)]
    pub predictions: BTreeMap<String, String>,
}

impl TaskSummary {
    /// The row name: the task, with the model's slug when the report holds several models
    /// (`esc50 (wavlm-base-plus)`).
    pub fn label(&self, several_models: bool) -> String {
        if several_models {
            format!("{} ({})", self.task, self.slug)
        } else {
            self.task.clone()
        }
    }
}

/// A probe's accuracy at one layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerPoint {
    /// The layer (an index, `last_hidden_state`, `weighted`).
    pub layer: String,
    /// Mean accuracy over folds x runs.
    pub accuracy: f64,
    /// Its standard deviation.
    pub accuracy_std: f64,
}

/// Reads one results.json (the [`results::Results`] schema); `slug` and `folder` are left for
/// the caller ([`collect`]) to set.
pub fn read_task(path: &Path) -> Result<TaskSummary> {
    let mut t = summarise(&results::Results::read(path)?)
        .with_context(|| format!("{}: no probe results", path.display()))?;
    t.dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok(t)
}

/// One task's summary from its results; `None` when it holds no probe.
pub fn summarise(r: &results::Results) -> Option<TaskSummary> {
    let probes: Vec<ProbeSummary> = r
        .probes
        .iter()
        .map(|(name, p)| ProbeSummary {
            probe: name.clone(),
            accuracy_mean: p.accuracy.mean,
            accuracy_std: p.accuracy.std,
            macro_f1_mean: p.macro_f1.mean,
            macro_f1_std: p.macro_f1.std,
            evaluations: p.evaluations.len(),
            absent_classes: p.absent_classes.clone(),
            macro_f1_over_all_class_names: p.macro_f1_all_classes.is_none(),
            task_metrics: p.task_metrics.clone().filter(|v| !v.is_null()),
        })
        .collect();
    // Highest mean accuracy; on a tie, the first probe in results.json order.
    let best_probe = probes
        .iter()
        .fold(None::<&ProbeSummary>, |best, p| match best {
            Some(b) if b.accuracy_mean >= p.accuracy_mean => Some(b),
            _ => Some(p),
        })?
        .probe
        .clone();
    let per_layer = r.per_layer.as_ref().map(|layers| {
        layers
            .iter()
            .map(|entry| {
                let accs: Vec<f64> = probes
                    .iter()
                    .filter_map(|p| entry.probes.get(&p.probe).map(|s| s.accuracy))
                    .collect();
                accs.iter().sum::<f64>() / accs.len() as f64
            })
            .collect()
    });
    let layer_curves = r
        .per_layer
        .iter()
        .flatten()
        .flat_map(|entry| {
            entry.probes.iter().map(move |(probe, score)| {
                (
                    probe.clone(),
                    LayerPoint {
                        layer: layer_text(&entry.layer),
                        accuracy: score.accuracy,
                        accuracy_std: score.accuracy_std,
                    },
                )
            })
        })
        .fold(
            BTreeMap::<String, Vec<LayerPoint>>::new(),
            |mut m, (p, pt)| {
                m.entry(p).or_default().push(pt);
                m
            },
        );
    Some(TaskSummary {
        slug: r
            .features
            .slug
            .clone()
            .unwrap_or_else(|| results::model_slug(&r.features.model)),
        family: r.features.family.clone(),
        revision: r.features.revision.clone(),
        layer_curves,
        folder: r.task.clone(),
        dir: PathBuf::new(),
        predictions: r.predictions.clone(),
        task: r.task.clone(),
        description: r.description.clone(),
        protocol: r.protocol.name.clone(),
        protocol_description: r.protocol.description.clone(),
        layer: r.features.layer.clone(),
        items: r.features.items as u64,
        model: r.features.model.clone(),
        probes,
        best_probe,
        per_layer,
        layer_weights: r
            .layer_weights
            .as_ref()
            .and_then(|w| serde_json::to_value(w).ok()),
        plots: r.plots.clone(),
    })
}

/// Every `<dir>/<task>/<slug>/results.json` and `<dir>/<task>/results.json` (the layout before
/// model slugs; left out, with a note, when `<task>/<its slug>/` also has one), sorted by task
/// and model. Errors when there is none.
pub fn collect(results_dir: &Path) -> Result<Vec<TaskSummary>> {
    let entries = std::fs::read_dir(results_dir).with_context(|| {
        format!(
            "cannot read {} (run a task's `train` or `run` first, or pass --results-dir)",
            results_dir.display()
        )
    })?;
    let mut tasks = Vec::new();
    for entry in entries {
        let task_dir = entry?.path();
        if !task_dir.is_dir() {
            continue;
        }
        let folder = task_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let path = task_dir.join("results.json");
        if path.is_file() {
            let mut t = read_task(&path)?;
            if task_dir.join(&t.slug).join("results.json").is_file() {
                eprintln!(
                    "note: leaving out {} (written before model slugs): {}/{}/results.json \
                     is newer",
                    path.display(),
                    folder,
                    t.slug
                );
            } else {
                t.folder = folder.clone();
                tasks.push(t);
            }
        }
        // One folder per model: `<task>/<slug>/results.json`.
        let mut slugs: Vec<PathBuf> = std::fs::read_dir(&task_dir)
            .with_context(|| format!("cannot read {}", task_dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("results.json").is_file())
            .collect();
        slugs.sort();
        for slug_dir in slugs {
            let mut t = read_task(&slug_dir.join("results.json"))?;
            let slug = slug_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            t.folder = format!("{folder}/{slug}");
            t.slug = slug;
            tasks.push(t);
        }
    }
    if tasks.is_empty() {
        bail!(
            "no <task>/results.json or <task>/<model>/results.json under {}; run e.g. `esc50 run` first",
            results_dir.display()
        );
    }
    tasks.sort_by(|a, b| (&a.task, &a.slug).cmp(&(&b.task, &b.slug)));
    Ok(tasks)
}

fn layer_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "?".into(),
        other => other.to_string(),
    }
}

/// The summary table as Markdown: one column pair per probe, the best probe in bold.
pub fn summary_markdown(tasks: &[TaskSummary]) -> String {
    let several = models::model_count(tasks) > 1;
    let mut probe_names: Vec<String> = Vec::new();
    for t in tasks {
        for p in &t.probes {
            if !probe_names.contains(&p.probe) {
                probe_names.push(p.probe.clone());
            }
        }
    }
    let mut s = String::from("# Results across tasks\n\n");
    let _ = writeln!(
        s,
        "Accuracy and macro-F1 are mean ± sample std over every fold x run evaluation of the \
         task's protocol; the best probe (highest mean accuracy) is in bold. Macro-F1 is \
         scikit-learn's `f1_score(average=\"macro\")`: each evaluation's mean F1 over the \
         classes in its test labels or predictions (absent classes, listed below, are left \
         out).\n"
    );
    let _ = write!(s, "| task | protocol | layer |");
    for p in &probe_names {
        let _ = write!(s, " {p} accuracy | {p} macro-F1 |");
    }
    let _ = writeln!(s, " best probe |");
    let _ = writeln!(
        s,
        "|---|---|---|{}---|",
        "---|---|".repeat(probe_names.len())
    );
    for t in tasks {
        let _ = write!(
            s,
            "| {} | {} | {} |",
            t.label(several),
            t.protocol,
            layer_text(&t.layer)
        );
        for name in &probe_names {
            match t.probes.iter().find(|p| &p.probe == name) {
                Some(p) => {
                    let bold = if p.probe == t.best_probe { "**" } else { "" };
                    let dagger = if p.macro_f1_over_all_class_names {
                        " †"
                    } else {
                        ""
                    };
                    let _ = write!(
                        s,
                        " {bold}{:.4} ± {:.4}{bold} | {:.4} ± {:.4}{dagger} |",
                        p.accuracy_mean, p.accuracy_std, p.macro_f1_mean, p.macro_f1_std
                    );
                }
                None => s.push_str(" — | — |"),
            }
        }
        let _ = writeln!(s, " {} |", t.best_probe);
    }
    if tasks
        .iter()
        .flat_map(|t| &t.probes)
        .any(|p| p.macro_f1_over_all_class_names)
    {
        let _ = writeln!(
            s,
            "\n† results.json written before macro-F1 left absent classes out: the mean over \
             every class name, absent classes counted as 0 (scikit-learn with \
             `labels=range(C)`); run the task's `train` again for scikit-learn's default."
        );
    }
    let absent: Vec<String> = tasks
        .iter()
        .flat_map(|t| {
            t.probes
                .iter()
                .filter(|p| !p.absent_classes.is_empty())
                .map(move |p| {
                    format!(
                        "- {} {}: {}",
                        t.label(several),
                        p.probe,
                        p.absent_classes.join(", ")
                    )
                })
        })
        .collect();
    if !absent.is_empty() {
        let _ = writeln!(
            s,
            "\n## Classes left out of macro-F1\n\nAbsent from every evaluation (no test item, \
             never predicted):\n\n{}",
            absent.join("\n")
        );
    }
    let _ = writeln!(s, "\n## Protocols\n");
    for t in tasks {
        let evaluations = t.probes.first().map_or(0, |p| p.evaluations);
        let _ = writeln!(
            s,
            "- **{}** ({}): {} — {} items, {} evaluations per probe, model `{}` (slug `{}`, \
             family {}, revision {})",
            t.label(several),
            t.description,
            t.protocol_description,
            t.items,
            evaluations,
            t.model,
            t.slug,
            t.family.as_deref().unwrap_or("not recorded"),
            t.revision.as_deref().unwrap_or("not recorded"),
        );
    }
    let metrics: Vec<&TaskSummary> = tasks
        .iter()
        .filter(|t| t.probes.iter().any(|p| p.task_metrics.is_some()))
        .collect();
    if !metrics.is_empty() {
        let _ = writeln!(s, "\n## Task-specific metrics\n");
        for t in metrics {
            for p in &t.probes {
                if let Some(m) = &p.task_metrics {
                    let _ = writeln!(s, "- {} {}: `{m}`", t.label(several), p.probe);
                }
            }
        }
    }
    let weighted: Vec<&TaskSummary> = tasks.iter().filter(|t| t.layer_weights.is_some()).collect();
    if !weighted.is_empty() {
        let _ = writeln!(s, "\n## Learned layer weights (`--layer weighted`)\n");
        for t in weighted {
            if let Some(w) = &t.layer_weights {
                let _ = writeln!(s, "- {}: `{w}`", t.label(several));
            }
        }
    }
    let _ = writeln!(s, "\n## Plots\n");
    for t in tasks {
        if t.plots.is_empty() {
            continue;
        }
        let links: Vec<String> = t
            .plots
            .iter()
            .map(|p| format!("[{p}]({}/{p})", t.folder))
            .collect();
        let _ = writeln!(s, "- {}: {}", t.label(several), links.join(", "));
    }
    s
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The summary as CSV, one row per task and probe (`absent_classes` joined by `;`).
pub fn summary_csv(tasks: &[TaskSummary]) -> String {
    let mut s = String::from(
        "task,protocol,protocol_description,layer,items,probe,accuracy_mean,accuracy_std,macro_f1_mean,macro_f1_std,evaluations,best,absent_classes,macro_f1_over_all_class_names,model\n",
    );
    for t in tasks {
        for p in &t.probes {
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                csv_field(&t.task),
                csv_field(&t.protocol),
                csv_field(&t.protocol_description),
                csv_field(&layer_text(&t.layer)),
                t.items,
                csv_field(&p.probe),
                p.accuracy_mean,
                p.accuracy_std,
                p.macro_f1_mean,
                p.macro_f1_std,
                p.evaluations,
                p.probe == t.best_probe,
                csv_field(&p.absent_classes.join(";")),
                p.macro_f1_over_all_class_names,
                csv_field(&t.slug)
            );
        }
    }
    s
}

/// Pearson correlation of two equally long profiles; `None` when either is constant or the
/// lengths differ.
pub fn profile_correlation(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.len() != b.len() || a.len() < 2 || a.iter().chain(b).any(|v| !v.is_finite()) {
        return None;
    }
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    if va <= 1e-12 || vb <= 1e-12 {
        return None;
    }
    Some((cov / (va * vb).sqrt()).clamp(-1.0, 1.0))
}

/// Task x task correlation of per-layer profiles, over the tasks that have one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Similarity {
    /// Tasks with a per-layer profile, in matrix order.
    pub tasks: Vec<String>,
    /// `matrix[i][j]`: Pearson correlation, `None` where a profile is constant or the layer
    /// counts differ.
    pub matrix: Vec<Vec<Option<f64>>>,
    /// Tasks without a per-layer profile (not trained with `--layer all`).
    pub without_profile: Vec<String>,
}

/// The similarity of the module docs.
pub fn similarity(tasks: &[TaskSummary]) -> Similarity {
    let several = models::model_count(tasks) > 1;
    let with: Vec<&TaskSummary> = tasks.iter().filter(|t| t.per_layer.is_some()).collect();
    let matrix = with
        .iter()
        .map(|a| {
            with.iter()
                .map(|b| {
                    profile_correlation(
                        a.per_layer.as_deref().unwrap_or_default(),
                        b.per_layer.as_deref().unwrap_or_default(),
                    )
                })
                .collect()
        })
        .collect();
    Similarity {
        tasks: with.iter().map(|t| t.label(several)).collect(),
        matrix,
        without_profile: tasks
            .iter()
            .filter(|t| t.per_layer.is_none())
            .map(|t| t.label(several))
            .collect(),
    }
}

fn similarity_markdown(sim: &Similarity, tasks: &[TaskSummary]) -> String {
    let mut s = String::from("# Task similarity\n\n");
    let _ = writeln!(
        s,
        "Pearson correlation between tasks' per-layer accuracy profiles (the probes' mean test \
         accuracy at each hidden state, from `train --layer all`): 1 means the same layers \
         serve both tasks best, whatever their absolute accuracy. `n/a`: a constant profile \
         (e.g. every layer at 100 %) or different layer counts.\n"
    );
    if sim.tasks.is_empty() {
        let _ = writeln!(
            s,
            "No task has a per-layer profile yet: run `<task> run --layers all --layer all`."
        );
    } else {
        let _ = writeln!(
            s,
            "| | {} |\n|---|{}",
            sim.tasks.join(" | "),
            "---|".repeat(sim.tasks.len())
        );
        for (task, row) in sim.tasks.iter().zip(&sim.matrix) {
            let cells: Vec<String> = row
                .iter()
                .map(|v| v.map_or("n/a".into(), |v| format!("{v:.3}")))
                .collect();
            let _ = writeln!(s, "| {task} | {} |", cells.join(" | "));
        }
        let _ = writeln!(s, "\nProfiles (accuracy per hidden state):\n");
        for t in tasks {
            if let Some(p) = &t.per_layer {
                let v: Vec<String> = p.iter().map(|a| format!("{a:.3}")).collect();
                let _ = writeln!(
                    s,
                    "- {}: {}",
                    t.label(models::model_count(tasks) > 1),
                    v.join(", ")
                );
            }
        }
        let _ = writeln!(s, "\n![task similarity](task_similarity.png)");
    }
    if !sim.without_profile.is_empty() {
        let _ = writeln!(
            s,
            "\nWithout a per-layer profile: {}.",
            sim.without_profile.join(", ")
        );
    }
    let _ = writeln!(
        s,
        "\nLinear CKA between tasks' features needs the same items embedded for both tasks; the \
         six datasets share no audio files, so it is not computed here."
    );
    s
}

/// Draws a task x task similarity matrix in [-1, 1] (`n/a` cells drawn as 0 and labelled).
fn similarity_heat_map(
    path: &Path,
    title: &str,
    labels: &[String],
    matrix: &[Vec<Option<f64>>],
    colorbar_label: &str,
) -> Result<()> {
    let values: Vec<Vec<f64>> = matrix
        .iter()
        .map(|row| row.iter().map(|v| v.unwrap_or(0.0)).collect())
        .collect();
    let annotations: Vec<Vec<String>> = matrix
        .iter()
        .map(|row| {
            row.iter()
                .map(|v| v.map_or("n/a".into(), |v| format!("{v:.2}")))
                .collect()
        })
        .collect();
    plots::heat_map(
        path,
        &plots::HeatMap {
            title,
            rows: labels,
            cols: labels,
            values: &values,
            range: (-1.0, 1.0),
            annotations: Some(&annotations),
            row_title: "task",
            col_title: "task",
            colorbar_label,
        },
    )
    .with_context(|| format!("cannot plot {}", path.display()))
}

/// Writes the summary and similarity files into `results_dir`; returns their paths.
pub fn write_report(results_dir: &Path) -> Result<Vec<PathBuf>> {
    let tasks = collect(results_dir)?;
    let mut written = Vec::new();
    let mut write = |name: &str, contents: String| -> Result<()> {
        let path = results_dir.join(name);
        std::fs::write(&path, contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
        Ok(())
    };
    let comparison = (models::model_count(&tasks) > 1).then(|| models::compare(&tasks));
    let mut summary = summary_markdown(&tasks);
    if let Some(c) = &comparison {
        summary.push_str(&models::markdown(c));
    }
    write("summary.md", summary)?;
    write("summary.csv", summary_csv(&tasks))?;
    write(
        "summary.json",
        serde_json::to_string_pretty(&serde_json::json!({ "tasks": tasks, "models": comparison }))?,
    )?;
    let sim = similarity(&tasks);
    let mut sim_md = similarity_markdown(&sim, &tasks);
    if let Some(c) = &comparison {
        sim_md.push_str(&models::similarity_markdown(c));
    }
    write("task_similarity.md", sim_md)?;
    if let Some(c) = &comparison {
        let plots = models::write_plots(results_dir, &tasks, c)?;
        written.extend(plots);
    }
    if !sim.tasks.is_empty() {
        let path = results_dir.join("task_similarity.png");
        similarity_heat_map(
            &path,
            "task similarity: correlation of per-layer accuracy profiles",
            &sim.tasks,
            &sim.matrix,
            "Pearson r",
        )?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A complete results.json of the `results` schema.
    fn results(task: &str, lin: f64, mlp: f64, profile: Option<&[f64]>) -> Value {
        let ms =
            |mean: f64, std: f64| serde_json::json!({"mean": mean, "std": std, "per_fold": [mean]});
        let evaluation = |acc: f64| {
            serde_json::json!({"fold": "fold1", "run": 0, "seed": 42, "accuracy": acc,
                "macro_f1": acc - 0.05, "balanced_accuracy": acc, "best_epoch": null,
                "sizes": [80, 0, 20]})
        };
        let probe = |acc: f64| {
            serde_json::json!({
                "accuracy": ms(acc, 0.01),
                "macro_f1": ms(acc - 0.05, 0.02),
                "macro_f1_all_classes": ms(acc - 0.1, 0.02),
                "balanced_accuracy": ms(acc, 0.01),
                "absent_classes": [],
                "evaluations": [evaluation(acc), evaluation(acc)],
                "confusion_matrix": [[1, 0], [0, 1]],
                "classes": ["a", "b"],
                "per_class": [],
                "train_seconds": 0.5,
            })
        };
        let mut v = serde_json::json!({
            "task": task, "description": "d, with comma",
            "protocol": {"name": "official", "description": "5-fold CV"},
            "hyperparameters": {"epochs": 100, "batch_size": 8, "learning_rate": 0.001,
                "optimizer": "Adam", "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0,
                "seed": 42, "mlp_hidden": 256},
            "features": {"path": "f.safetensors", "sha256": "00", "model": "m", "revision": null,
                "layers_stored": "all", "layer": 12, "pooling": "mean", "dim": 768,
                "items": 100},
            "probes": {"linear": probe(lin), "mlp": probe(mlp)},
            "plots": ["tsne.png"],
        });
        if let Some(p) = profile {
            let score =
                |a: f64| serde_json::json!({"accuracy": a, "accuracy_std": 0.0, "macro_f1": a});
            v["per_layer"] = p
                .iter()
                .enumerate()
                .map(|(i, a)| serde_json::json!({"layer": i, "linear": score(a - 0.1), "mlp": score(*a)}))
                .collect();
        }
        v
    }

    fn write(dir: &Path, task: &str, v: &Value) {
        std::fs::create_dir_all(dir.join(task)).unwrap();
        std::fs::write(dir.join(task).join("results.json"), v.to_string()).unwrap();
    }

    #[test]
    fn table_similarity_and_files() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "esc50",
            &results("esc50", 0.7, 0.8, Some(&[0.5, 0.6, 0.7])),
        );
        write(
            dir.path(),
            "nsynth",
            &results("nsynth", 0.6, 0.5, Some(&[0.7, 0.6, 0.5])),
        );
        write(
            dir.path(),
            "icbhi",
            &results("icbhi", 0.6, 0.5, Some(&[0.4, 0.5, 0.6])),
        );
        write(
            dir.path(),
            "librispeech",
            &results("librispeech", 0.9, 0.95, None),
        );
        std::fs::create_dir_all(dir.path().join("empty")).unwrap();
        let written = write_report(dir.path()).unwrap();
        assert_eq!(written.len(), 5);

        let tasks = collect(dir.path()).unwrap();
        let names: Vec<&str> = tasks.iter().map(|t| t.task.as_str()).collect();
        assert_eq!(names, ["esc50", "icbhi", "librispeech", "nsynth"]);
        assert_eq!(tasks[0].best_probe, "mlp");
        assert_eq!(tasks[1].best_probe, "linear");
        let profile = tasks[0].per_layer.as_ref().unwrap();
        for (got, want) in profile.iter().zip([0.45, 0.55, 0.65]) {
            assert!((got - want).abs() < 1e-12, "{profile:?}");
        }

        let md = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
        assert!(md.contains("| esc50 | official | 12 | 0.7000 ± 0.0100 | 0.6500 ± 0.0200 | **0.8000 ± 0.0100** |"), "{md}");
        assert!(md.contains("5-fold CV") && md.contains("[tsne.png](esc50/tsne.png)"));
        let csv = std::fs::read_to_string(dir.path().join("summary.csv")).unwrap();
        assert_eq!(csv.lines().count(), 1 + 8);
        assert!(
            csv.contains("esc50,official,5-fold CV,12,100,mlp,0.8,0.01,0.75"),
            "{csv}"
        );
        let json: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("summary.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(json["tasks"].as_array().unwrap().len(), 4);

        let sim = similarity(&tasks);
        assert_eq!(sim.tasks, ["esc50", "icbhi", "nsynth"]);
        assert_eq!(sim.without_profile, ["librispeech"]);
        let r = |i: usize, j: usize| sim.matrix[i][j].unwrap();
        assert!((r(0, 1) - 1.0).abs() < 1e-9, "same shape");
        assert!((r(0, 2) + 1.0).abs() < 1e-9, "opposite shape");
        let sim_md = std::fs::read_to_string(dir.path().join("task_similarity.md")).unwrap();
        assert!(
            sim_md.contains("| esc50 | 1.000 | 1.000 | -1.000 |"),
            "{sim_md}"
        );
        let png = std::fs::read(dir.path().join("task_similarity.png")).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    }

    #[test]
    fn absent_classes_are_listed_and_old_results_are_marked() {
        let dir = tempfile::tempdir().unwrap();
        let mut nsynth = results("nsynth", 0.6, 0.5, None);
        nsynth["probes"]["linear"]["absent_classes"] = serde_json::json!(["synth_lead"]);
        write(dir.path(), "nsynth", &nsynth);
        // Written before macro-F1 left absent classes out: no macro_f1_all_classes.
        let mut old = results("esc50", 0.7, 0.8, None);
        for probe in ["linear", "mlp"] {
            let p = old["probes"][probe].as_object_mut().unwrap();
            p.remove("macro_f1_all_classes");
            p.remove("absent_classes");
        }
        write(dir.path(), "esc50", &old);
        write_report(dir.path()).unwrap();
        let tasks = collect(dir.path()).unwrap();
        assert!(tasks[0]
            .probes
            .iter()
            .all(|p| p.macro_f1_over_all_class_names));
        assert!(!tasks[1].probes[0].macro_f1_over_all_class_names);
        assert_eq!(tasks[1].probes[0].absent_classes, ["synth_lead"]);
        let md = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
        assert!(md.contains("| 0.6500 ± 0.0200 † |"), "{md}");
        assert!(md.contains("\n† results.json written before"), "{md}");
        assert!(
            md.contains("| nsynth | official | 12 | **0.6000 ± 0.0100** | 0.5500 ± 0.0200 |"),
            "{md}"
        );
        assert!(md.contains("- nsynth linear: synth_lead\n"), "{md}");
        let csv = std::fs::read_to_string(dir.path().join("summary.csv")).unwrap();
        assert!(csv.contains(",true,synth_lead,false,m\n"), "{csv}");
        assert!(csv.contains("esc50,official,5-fold CV,12,100,linear,0.7,0.01,0.6499999999999999,0.02,2,false,,true,m\n"), "{csv}");
    }

    /// A predictions CSV where `correct` of the `n` items are predicted right.
    fn predictions(n: usize, correct: usize) -> String {
        let mut s = String::from(
            "fold,run,seed,item,path,true_label,predicted_label,true_class,predicted_class\n",
        );
        for i in 0..n {
            let pred = usize::from(i >= correct);
            s.push_str(&format!("fold1,0,42,{i},audio/{i}.wav,0,{pred},a,b\n"));
        }
        s
    }

    #[test]
    fn several_models_side_by_side() {
        let dir = tempfile::tempdir().unwrap();
        // Two models on two tasks, one folder per model; each with per-layer curves.
        let runs = [
            ("esc50", "hubert", 0.70, 0.80, [0.5, 0.6, 0.9], 80),
            ("esc50", "wavlm-base-plus", 0.60, 0.70, [0.4, 0.5, 0.6], 60),
            ("nsynth", "hubert", 0.50, 0.55, [0.5, 0.5, 0.5], 50),
            ("nsynth", "wavlm-base-plus", 0.60, 0.65, [0.6, 0.6, 0.6], 70),
        ];
        for (task, slug, lin, mlp, profile, correct) in runs {
            let mut v = results(task, lin, mlp, Some(&profile));
            v["features"]["model"] = serde_json::json!(format!("org/{slug}"));
            v["features"]["slug"] = serde_json::json!(slug);
            v["features"]["family"] = serde_json::json!(slug.split('-').next());
            v["predictions"] = serde_json::json!({"mlp": "predictions_mlp.csv"});
            let folder = dir.path().join(task).join(slug);
            std::fs::create_dir_all(&folder).unwrap();
            std::fs::write(folder.join("results.json"), v.to_string()).unwrap();
            std::fs::write(
                folder.join("predictions_mlp.csv"),
                predictions(100, correct),
            )
            .unwrap();
        }
        // A results.json of the layout before model slugs, for a model that now has its folder:
        // left out, not counted twice.
        let mut legacy = results("esc50", 0.1, 0.1, None);
        legacy["features"]["model"] = serde_json::json!("facebook/hubert-base-ls960");
        std::fs::write(dir.path().join("esc50/results.json"), legacy.to_string()).unwrap();
        let written = write_report(dir.path()).unwrap();
        for name in [
            "esc50/layers_by_model.png",
            "nsynth/layers_by_model.png",
            "task_similarity_models.png",
        ] {
            assert!(
                written.contains(&dir.path().join(name)),
                "{name}: {written:?}"
            );
        }
        let tasks = collect(dir.path()).unwrap();
        let rows: Vec<(&str, &str)> = tasks
            .iter()
            .map(|t| (t.task.as_str(), t.slug.as_str()))
            .collect();
        assert_eq!(
            rows,
            [
                ("esc50", "hubert"),
                ("esc50", "wavlm-base-plus"),
                ("nsynth", "hubert"),
                ("nsynth", "wavlm-base-plus")
            ]
        );
        let c = models::compare(&tasks);
        assert_eq!(c.models, ["hubert", "wavlm-base-plus"]);
        // esc50: hubert's mlp curve peaks at layer 2 (0.9) above every reported score.
        let w = &c.winners[0];
        assert_eq!(
            (w.slug.as_str(), w.probe.as_str(), w.layer.as_str()),
            ("hubert", "mlp", "2")
        );
        assert!((w.accuracy - 0.9).abs() < 1e-12);
        assert_eq!(w.runner_up.as_deref(), Some("wavlm-base-plus"));
        // The paired difference is computed from the predictions: 0.80 - 0.60 on 100 items.
        let (d, lo, hi, n) = w.difference.unwrap();
        assert_eq!(n, 100);
        assert!(
            (d - 0.2).abs() < 1e-12 && lo <= d && d <= hi,
            "{d} [{lo}, {hi}]"
        );
        assert_eq!(c.winners[1].slug, "wavlm-base-plus");
        // hubert > wavlm on esc50, the reverse on nsynth: tau = -1.
        assert_eq!(c.rank_similarity[0][1], Some(-1.0));
        assert_eq!(c.rank_similarity[0][0], Some(1.0));

        let md = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
        assert!(md.contains("| esc50 (hubert) | official |"), "{md}");
        assert!(md.contains("## Models"), "{md}");
        assert!(
            md.contains("model `org/wavlm-base-plus` (slug `wavlm-base-plus`, family wavlm, revision not recorded)"),
            "{md}"
        );
        assert!(md.contains("- **esc50**: hubert (mlp, layer 2), accuracy 0.9000; ahead of wavlm-base-plus by +0.2000"), "{md}");
        assert!(md.contains("[tsne.png](esc50/hubert/tsne.png)"), "{md}");
        let sim = std::fs::read_to_string(dir.path().join("task_similarity.md")).unwrap();
        assert!(sim.contains("| esc50 | 1.000 | -1.000 |"), "{sim}");
        let csv = std::fs::read_to_string(dir.path().join("summary.csv")).unwrap();
        assert!(csv.lines().nth(1).unwrap().ends_with(",hubert"), "{csv}");
    }

    #[test]
    fn constant_profiles_and_missing_results() {
        assert_eq!(profile_correlation(&[1.0, 1.0], &[0.5, 0.7]), None);
        assert_eq!(profile_correlation(&[1.0, 2.0], &[0.5]), None);
        let dir = tempfile::tempdir().unwrap();
        let err = write_report(dir.path()).unwrap_err().to_string();
        assert!(err.contains("no <task>/results.json"), "{err}");
        write(
            dir.path(),
            "bad",
            &serde_json::json!({"task": "bad", "probes": {}}),
        );
        assert!(collect(dir.path()).is_err());
    }
}
