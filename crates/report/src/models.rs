//! Models side by side, for results of several models (`results/<task>/<slug>/results.json`):
//!
//! - a tasks x models table: each model's best probe at its reported layer (mean ± std over
//!   folds x runs) and, from a `--layer all` run, its best single layer;
//! - per task, the per-layer curves of every model overlaid (`<task>/layers_by_model.png`);
//! - the best model and layer per task, with a **paired bootstrap** 95% interval of the accuracy
//!   difference between the best model and the runner-up on the same test items (from the two
//!   runs' `predictions_<probe>.csv`; each item's correctness averaged over runs, items resampled
//!   with replacement, 2,000 resamples, seed 42, percentile interval);
//! - task similarity from the models' ranking: Kendall's tau-b between two tasks' model scores
//!   (1: the models rank the same on both tasks), next to the per-layer profile correlation.
//!
//! "Best layer" here is the layer with the highest mean **test** accuracy on a per-layer curve:
//! a description of the curve, not a selection (the `ablate` command selects layers on
//! validation data only).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::TaskSummary;

/// Resamples of the paired bootstrap.
pub const BOOTSTRAP_RESAMPLES: usize = 2000;
/// Seed of the paired bootstrap.
pub const BOOTSTRAP_SEED: u64 = 42;

/// One model on one task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelScore {
    /// The model's slug (`hubert`, `wavlm-base-plus`).
    pub slug: String,
    /// The best probe at the reported layer.
    pub probe: String,
    /// The reported layer (`last_hidden_state`, an index, `weighted`).
    pub layer: String,
    /// Mean test accuracy of `probe` at `layer`.
    pub accuracy: f64,
    /// Its standard deviation over folds x runs.
    pub accuracy_std: f64,
    /// With a per-layer curve: the layer, probe, mean and std of the highest mean accuracy.
    pub best_layer: Option<(String, String, f64, f64)>,
}

/// The best model of a task and how far ahead of the runner-up it is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskWinner {
    /// Task name.
    pub task: String,
    /// Best model, probe and layer (highest mean accuracy over reported layers and curves).
    pub slug: String,
    /// Its probe.
    pub probe: String,
    /// Its layer.
    pub layer: String,
    /// Its mean accuracy.
    pub accuracy: f64,
    /// The runner-up model (best of the others at their reported layers), if any.
    pub runner_up: Option<String>,
    /// Paired bootstrap of (best - runner-up) accuracy at the reported layers over the shared
    /// test items: (difference, 2.5 %, 97.5 %, items); `None` when the predictions are missing
    /// or share no item.
    pub difference: Option<(f64, f64, f64, usize)>,
}

/// Everything the models section shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelComparison {
    /// Every slug, sorted.
    pub models: Vec<String>,
    /// Every task, sorted.
    pub tasks: Vec<String>,
    /// `scores[task][slug]`.
    pub scores: BTreeMap<String, BTreeMap<String, ModelScore>>,
    /// Per task.
    pub winners: Vec<TaskWinner>,
    /// Kendall tau-b between tasks over their common models' accuracies (`None`: fewer than two
    /// common models, or no variation).
    pub rank_similarity: Vec<Vec<Option<f64>>>,
}

/// How many different models the summaries hold.
pub fn model_count(tasks: &[TaskSummary]) -> usize {
    tasks.iter().map(|t| &t.slug).collect::<BTreeSet<_>>().len()
}

fn score_of(t: &TaskSummary) -> Option<ModelScore> {
    let best = t.probes.iter().find(|p| p.probe == t.best_probe)?;
    let best_layer = t
        .layer_curves
        .iter()
        .flat_map(|(probe, curve)| curve.iter().map(move |pt| (probe, pt)))
        .fold(
            None::<(&String, &crate::LayerPoint)>,
            |acc, (probe, pt)| match acc {
                Some((_, b)) if b.accuracy >= pt.accuracy => acc,
                _ => Some((probe, pt)),
            },
        )
        .map(|(probe, pt)| {
            (
                pt.layer.clone(),
                probe.clone(),
                pt.accuracy,
                pt.accuracy_std,
            )
        });
    Some(ModelScore {
        slug: t.slug.clone(),
        probe: best.probe.clone(),
        layer: crate::layer_text(&t.layer),
        accuracy: best.accuracy_mean,
        accuracy_std: best.accuracy_std,
        best_layer,
    })
}

/// Kendall's tau-b of two equally long score lists (ties handled as scipy's `kendalltau`);
/// `None` for fewer than two pairs or when either list is constant.
pub fn kendall_tau_b(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.len() != b.len() || a.len() < 2 {
        return None;
    }
    let (mut concordant, mut discordant, mut ties_a, mut ties_b) = (0i64, 0i64, 0i64, 0i64);
    for i in 0..a.len() {
        for j in i + 1..a.len() {
            let da = a[i] - a[j];
            let db = b[i] - b[j];
            match (da == 0.0, db == 0.0) {
                (true, true) => {}
                (true, false) => ties_a += 1,
                (false, true) => ties_b += 1,
                (false, false) if (da > 0.0) == (db > 0.0) => concordant += 1,
                _ => discordant += 1,
            }
        }
    }
    let n_a = (concordant + discordant + ties_a) as f64;
    let n_b = (concordant + discordant + ties_b) as f64;
    if n_a == 0.0 || n_b == 0.0 {
        return None;
    }
    Some(((concordant - discordant) as f64 / (n_a * n_b).sqrt()).clamp(-1.0, 1.0))
}

/// Paired bootstrap of `mean(a - b)` over items (`a[i]`, `b[i]`: the two systems' scores on
/// item `i`): the observed difference and the 2.5 / 97.5 percentiles of `resamples` resampled
/// means (items drawn with replacement, seeded).
pub fn paired_bootstrap(a: &[f64], b: &[f64], resamples: usize, seed: u64) -> (f64, f64, f64) {
    let n = a.len().min(b.len());
    if n == 0 {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let diff: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let observed = diff.iter().sum::<f64>() / n as f64;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut means: Vec<f64> = (0..resamples.max(1))
        .map(|_| (0..n).map(|_| diff[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * (means.len() - 1) as f64).round() as usize).min(means.len() - 1)];
    (observed, at(0.025), at(0.975))
}

/// Each test item's correctness averaged over runs, keyed by (fold, item path), from a
/// `predictions_<probe>.csv`.
pub fn item_correctness(path: &Path) -> Result<BTreeMap<(String, String), f64>> {
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    let headers = reader.headers()?.clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("{}: column `{name}` missing", path.display()))
    };
    let (fold, item, truth, pred) = (
        col("fold")?,
        col("path")?,
        col("true_label")?,
        col("predicted_label")?,
    );
    let mut sums: BTreeMap<(String, String), (f64, f64)> = BTreeMap::new();
    for (line, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("{}: row {}", path.display(), line + 2))?;
        let get = |i: usize| record.get(i).unwrap_or_default();
        let entry = sums
            .entry((get(fold).to_string(), get(item).to_string()))
            .or_default();
        entry.0 += f64::from(u8::from(get(truth) == get(pred)));
        entry.1 += 1.0;
    }
    if sums.is_empty() {
        bail!("{}: no predictions", path.display());
    }
    Ok(sums.into_iter().map(|(k, (c, n))| (k, c / n)).collect())
}

fn bootstrap_between(
    a: &TaskSummary,
    b: &TaskSummary,
    probe_a: &str,
    probe_b: &str,
) -> Option<(f64, f64, f64, usize)> {
    let read = |t: &TaskSummary, probe: &str| {
        let file = t.predictions.get(probe)?;
        item_correctness(&t.dir.join(file)).ok()
    };
    let (pa, pb) = (read(a, probe_a)?, read(b, probe_b)?);
    let shared: Vec<&(String, String)> = pa.keys().filter(|k| pb.contains_key(*k)).collect();
    if shared.is_empty() {
        return None;
    }
    let xa: Vec<f64> = shared.iter().map(|k| pa[*k]).collect();
    let xb: Vec<f64> = shared.iter().map(|k| pb[*k]).collect();
    let (d, lo, hi) = paired_bootstrap(&xa, &xb, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED);
    Some((d, lo, hi, shared.len()))
}

/// The comparison of the module docs.
pub fn compare(tasks: &[TaskSummary]) -> ModelComparison {
    let models: Vec<String> = tasks
        .iter()
        .map(|t| t.slug.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut scores: BTreeMap<String, BTreeMap<String, ModelScore>> = BTreeMap::new();
    for t in tasks {
        if let Some(s) = score_of(t) {
            scores
                .entry(t.task.clone())
                .or_default()
                .insert(t.slug.clone(), s);
        }
    }
    let names: Vec<String> = scores.keys().cloned().collect();
    let mut winners = Vec::new();
    for (task, by_model) in &scores {
        // The best (model, layer): reported layers and per-layer curves alike.
        let candidates = by_model.values().flat_map(|s| {
            std::iter::once((s.slug.clone(), s.probe.clone(), s.layer.clone(), s.accuracy)).chain(
                s.best_layer
                    .iter()
                    .map(|(l, p, a, _)| (s.slug.clone(), p.clone(), l.clone(), *a)),
            )
        });
        let Some(best) =
            candidates.fold(None::<(String, String, String, f64)>, |acc, c| match acc {
                Some(ref b) if b.3 >= c.3 => acc,
                _ => Some(c),
            })
        else {
            continue;
        };
        let leader = &by_model[&best.0];
        let runner_up =
            by_model
                .values()
                .filter(|s| s.slug != best.0)
                .fold(None::<&ModelScore>, |acc, s| match acc {
                    Some(b) if b.accuracy >= s.accuracy => acc,
                    _ => Some(s),
                });
        let find = |slug: &str| tasks.iter().find(|t| &t.task == task && t.slug == slug);
        let difference = runner_up.and_then(|r| {
            bootstrap_between(find(&leader.slug)?, find(&r.slug)?, &leader.probe, &r.probe)
        });
        winners.push(TaskWinner {
            task: task.clone(),
            slug: best.0,
            probe: best.1,
            layer: best.2,
            accuracy: best.3,
            runner_up: runner_up.map(|r| r.slug.clone()),
            difference,
        });
    }
    let rank_similarity = names
        .iter()
        .map(|a| {
            names
                .iter()
                .map(|b| {
                    let common: Vec<&String> = scores[a]
                        .keys()
                        .filter(|m| scores[b].contains_key(*m))
                        .collect();
                    let xa: Vec<f64> = common.iter().map(|m| scores[a][*m].accuracy).collect();
                    let xb: Vec<f64> = common.iter().map(|m| scores[b][*m].accuracy).collect();
                    kendall_tau_b(&xa, &xb)
                })
                .collect()
        })
        .collect();
    ModelComparison {
        models,
        tasks: names,
        scores,
        winners,
        rank_similarity,
    }
}

/// The models section of summary.md.
pub fn markdown(c: &ModelComparison) -> String {
    let mut s = String::from("\n## Models\n\n");
    let _ = writeln!(
        s,
        "Each cell: the model's best probe at its reported layer, mean ± std test accuracy over \
         folds x runs; `best` is the highest mean test accuracy on its per-layer curve \
         (`--layers all --layer all`), a description, not a selection.\n"
    );
    let _ = writeln!(s, "| task | {} |", c.models.join(" | "));
    let _ = writeln!(s, "|---|{}", "---|".repeat(c.models.len()));
    for task in &c.tasks {
        let cells: Vec<String> = c
            .models
            .iter()
            .map(|m| match c.scores[task].get(m) {
                Some(sc) => {
                    let mut cell = format!(
                        "{:.4} ± {:.4} ({}, {})",
                        sc.accuracy, sc.accuracy_std, sc.probe, sc.layer
                    );
                    if let Some((layer, probe, acc, std)) = &sc.best_layer {
                        let _ = write!(cell, "; best {acc:.4} ± {std:.4} ({probe}, layer {layer})");
                    }
                    cell
                }
                None => "—".into(),
            })
            .collect();
        let _ = writeln!(s, "| {task} | {} |", cells.join(" | "));
    }
    let _ = writeln!(s, "\n### Best model and layer per task\n");
    for w in &c.winners {
        let _ = write!(
            s,
            "- **{}**: {} ({}, layer {}), accuracy {:.4}",
            w.task, w.slug, w.probe, w.layer, w.accuracy
        );
        match (&w.runner_up, &w.difference) {
            (Some(r), Some((d, lo, hi, n))) => {
                let _ = writeln!(
                    s,
                    "; ahead of {r} by {d:+.4} at the reported layers (paired bootstrap 95% \
                     interval [{lo:+.4}, {hi:+.4}] over {n} test items)"
                );
            }
            (Some(r), None) => {
                let _ = writeln!(s, "; runner-up {r} (no shared test predictions to pair)");
            }
            _ => s.push('\n'),
        }
    }
    s
}

/// The rank-correlation part of task_similarity.md.
pub fn similarity_markdown(c: &ModelComparison) -> String {
    let mut s = String::from("\n## Similarity from the models' ranking\n\n");
    let _ = writeln!(
        s,
        "Kendall's tau-b between two tasks' accuracies of their common models (each model's best \
         probe at its reported layer): 1 when the models rank the same on both tasks, -1 when \
         the order is reversed. With two models it can only be ±1; it says more with each \
         model added. `n/a`: fewer than two common models or tied scores.\n"
    );
    let _ = writeln!(
        s,
        "| | {} |\n|---|{}",
        c.tasks.join(" | "),
        "---|".repeat(c.tasks.len())
    );
    for (task, row) in c.tasks.iter().zip(&c.rank_similarity) {
        let cells: Vec<String> = row
            .iter()
            .map(|v| v.map_or("n/a".into(), |v| format!("{v:.3}")))
            .collect();
        let _ = writeln!(s, "| {task} | {} |", cells.join(" | "));
    }
    let _ = writeln!(
        s,
        "\n![task similarity from model ranking](task_similarity_models.png)"
    );
    s
}

/// Draws `<task>/layers_by_model.png` for every task with per-layer curves of two or more
/// models, and `task_similarity_models.png`; returns the paths written.
pub fn write_plots(
    results_dir: &Path,
    tasks: &[TaskSummary],
    c: &ModelComparison,
) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for task in &c.tasks {
        let with_curves: Vec<&TaskSummary> = tasks
            .iter()
            .filter(|t| &t.task == task && t.per_layer.is_some())
            .collect();
        if with_curves.len() < 2 {
            continue;
        }
        let longest = with_curves
            .iter()
            .map(|t| t.per_layer.as_ref().map_or(0, Vec::len))
            .max()
            .unwrap_or(0);
        let x: Vec<String> = (0..longest).map(|i| i.to_string()).collect();
        // A model with fewer hidden states (DistilHuBERT: 3 against 13) keeps its last value
        // to the right edge; its legend says how many hidden states it has.
        let series: Vec<plots::Series> = with_curves
            .iter()
            .map(|t| {
                let mut v = t.per_layer.clone().unwrap_or_default();
                let (len, last) = (v.len(), v.last().copied().unwrap_or(0.0));
                v.resize(longest, last);
                plots::Series {
                    name: if len < longest {
                        format!("{} ({len} hidden states)", t.slug)
                    } else {
                        t.slug.clone()
                    },
                    values: v,
                    spread: None,
                }
            })
            .collect();
        let dir = results_dir.join(task);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join("layers_by_model.png");
        plots::line_chart(
            &path,
            &format!("{task}: accuracy per hidden state, by model"),
            "hidden state",
            "mean test accuracy (probes)",
            &x,
            &series,
            (0.0, 1.0),
        )
        .with_context(|| format!("cannot plot {}", path.display()))?;
        written.push(path);
    }
    if c.tasks.len() >= 2 {
        let path = results_dir.join("task_similarity_models.png");
        crate::similarity_heat_map(
            &path,
            "task similarity: Kendall tau of the models' accuracies",
            &c.tasks,
            &c.rank_similarity,
            "Kendall tau-b",
        )?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kendall_tau_b_matches_its_definition() {
        assert_eq!(
            kendall_tau_b(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]),
            Some(1.0)
        );
        assert_eq!(
            kendall_tau_b(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]),
            Some(-1.0)
        );
        assert_eq!(kendall_tau_b(&[1.0, 1.0], &[1.0, 2.0]), None);
        assert_eq!(kendall_tau_b(&[1.0], &[1.0]), None);
        // One tie in `a`: C = 2, D = 0, tied-in-a pairs 1 -> 2 / sqrt(2 * 3).
        let t = kendall_tau_b(&[1.0, 1.0, 2.0], &[1.0, 2.0, 3.0]).unwrap();
        assert!((t - 2.0 / 6f64.sqrt()).abs() < 1e-12, "{t}");
    }

    #[test]
    fn paired_bootstrap_brackets_the_difference_and_is_seeded() {
        let a: Vec<f64> = (0..200).map(|i| f64::from(u8::from(i % 10 != 0))).collect();
        let b: Vec<f64> = (0..200).map(|i| f64::from(u8::from(i % 4 != 0))).collect();
        let (d, lo, hi) = paired_bootstrap(&a, &b, 500, 7);
        assert!((d - (0.9 - 0.75)).abs() < 1e-12);
        assert!(lo < d && d < hi && lo > 0.0, "{lo} {d} {hi}");
        assert_eq!(paired_bootstrap(&a, &b, 500, 7), (d, lo, hi));
        let same = paired_bootstrap(&a, &a, 100, 1);
        assert_eq!(same, (0.0, 0.0, 0.0));
    }
}
