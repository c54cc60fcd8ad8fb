//! The PNG plots `train` writes next to `results.json` (drawn by the `plots` crate):
//!
//! - `confusion_<probe>.png`: the confusion matrix summed over folds and runs, coloured by row
//!   fraction (recall), class names on both axes;
//! - `per_layer.png` (when several layers were trained): accuracy per hidden state, one line
//!   per probe with a ± std band, the best layer circled;
//! - `layer_weights_<probe>.png` (`--layer weighted`): the learned softmax weight of each hidden
//!   state (mean over folds and runs);
//! - `tsne.png`: exact t-SNE of the reported layer's features (with `--layer weighted`, the
//!   per-layer standardised features summed with the learned weights; every item, or a seeded
//!   sample of [`TSNE_MAX_POINTS`]), standardised over the plotted items, coloured by class;
//! - `umap.png`: UMAP (15 neighbours, `min_dist` 0.1, seed [`TSNE_SEED`]) of the same items and
//!   the same standardised features, coloured by class.

use std::path::Path;

use anyhow::{Context, Result};
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::store::FeatureStore;

/// At most this many items are embedded by t-SNE and UMAP (exact t-SNE is O(N²) per
/// iteration, UMAP's exact neighbours O(N²) once); both plots show the same items.
pub const TSNE_MAX_POINTS: usize = 2000;

/// Seed of the item sample and of both embeddings.
pub const TSNE_SEED: u64 = 42;

/// One probe's confusion matrix to plot.
#[derive(Debug, Clone, Copy)]
pub struct Confusion<'a> {
    /// Results key (`linear`, `mlp`): the file is `confusion_<key>.png`.
    pub key: &'a str,
    /// Class names (row and column order).
    pub classes: &'a [String],
    /// Counts, rows = true class.
    pub counts: &'a [Vec<u64>],
}

/// Writes `confusion_<key>.png` for each probe; returns the file names.
pub fn confusion_plots(
    dir: &Path,
    task: &str,
    layer: &str,
    probes: &[Confusion<'_>],
) -> Result<Vec<String>> {
    let mut written = Vec::new();
    for Confusion {
        key,
        classes,
        counts,
    } in probes
    {
        let name = format!("confusion_{key}.png");
        plots::confusion_matrix(
            &dir.join(&name),
            &format!("{task}: {key} probe, layer {layer} (summed over folds and runs)"),
            classes,
            counts,
        )
        .with_context(|| format!("cannot plot {name}"))?;
        written.push(name);
    }
    Ok(written)
}

/// Writes `per_layer.png`: `series` are `(probe, mean accuracy per layer, std per layer)`.
pub fn per_layer_plot(
    dir: &Path,
    task: &str,
    layers: &[String],
    series: Vec<(String, Vec<f64>, Vec<f64>)>,
) -> Result<String> {
    let name = "per_layer.png".to_string();
    let series: Vec<plots::Series> = series
        .into_iter()
        .map(|(name, values, std)| plots::Series {
            name,
            values,
            spread: Some(std),
        })
        .collect();
    plots::line_chart(
        &dir.join(&name),
        &format!("{task}: test accuracy per hidden state (mean ± std over folds and runs)"),
        "hidden state",
        "accuracy",
        layers,
        &series,
        (0.0, 1.0),
    )
    .context("cannot plot per_layer.png")?;
    Ok(name)
}

/// Writes `layer_weights.png`: the learned softmax weight per hidden state.
pub fn layer_weights_plot(
    dir: &Path,
    task: &str,
    probe: &str,
    layers: &[String],
    weights: &[f64],
) -> Result<String> {
    let name = format!("layer_weights_{probe}.png");
    plots::bar_chart(
        &dir.join(&name),
        &format!("{task}: learned layer weights ({probe} probe, mean over folds and runs)"),
        "hidden state",
        "softmax weight",
        layers,
        weights,
    )
    .with_context(|| format!("cannot plot {name}"))?;
    Ok(name)
}

/// Writes `tsne.png` of `features` (`[store.len(), store.dim]`, described by `what`, e.g.
/// "layer 12"), coloured by the store's labels; returns the file name.
pub fn tsne_plot(
    dir: &Path,
    task: &str,
    store: &FeatureStore,
    features: &[f32],
    what: &str,
) -> Result<String> {
    let name = "tsne.png".to_string();
    let (x, y, sampled) = embedding_input(store, features);
    let points = plots::tsne(
        &x,
        store.dim,
        &plots::TsneConfig {
            seed: TSNE_SEED,
            ..plots::TsneConfig::default()
        },
    )
    .context("t-SNE failed")?;
    plots::scatter(
        &dir.join(&name),
        &format!("{task}: t-SNE of {what}{sampled}"),
        "t-SNE",
        &points,
        &y,
        &store.class_names,
    )
    .context("cannot plot tsne.png")?;
    Ok(name)
}

/// Writes `umap.png` of the same items and features as [`tsne_plot`]; returns the file name.
/// A spectral initialisation that fails (the layout then starts at random, as umap-learn's
/// does) is logged as a warning.
pub fn umap_plot(
    dir: &Path,
    task: &str,
    store: &FeatureStore,
    features: &[f32],
    what: &str,
) -> Result<String> {
    let name = "umap.png".to_string();
    let (x, y, sampled) = embedding_input(store, features);
    let cfg = plots::UmapConfig {
        seed: TSNE_SEED,
        ..plots::UmapConfig::default()
    };
    let embedding = plots::umap(&x, store.dim, &cfg).context("UMAP failed")?;
    if let plots::UmapInit::Random { reason } = &embedding.init {
        tracing::warn!("umap.png: spectral initialisation failed ({reason}); random start");
    }
    plots::scatter(
        &dir.join(&name),
        &format!(
            "{task}: UMAP of {what}{sampled} ({} neighbours, min_dist {})",
            cfg.n_neighbors, cfg.min_dist
        ),
        "UMAP",
        &embedding.points,
        &y,
        &store.class_names,
    )
    .context("cannot plot umap.png")?;
    Ok(name)
}

/// The items both embeddings show (every item, or a seeded sample of [`TSNE_MAX_POINTS`] in
/// store order): their standardised features, labels, and the title's item count.
fn embedding_input(store: &FeatureStore, features: &[f32]) -> (Vec<f32>, Vec<usize>, String) {
    let labels = store.labels();
    let dim = store.dim;
    let n = labels.len();
    let mut chosen: Vec<usize> = if n > TSNE_MAX_POINTS {
        let mut rng = ChaCha8Rng::seed_from_u64(TSNE_SEED);
        sample(&mut rng, n, TSNE_MAX_POINTS).into_vec()
    } else {
        (0..n).collect()
    };
    chosen.sort_unstable();
    let mut x = Vec::with_capacity(chosen.len() * dim);
    for &i in &chosen {
        x.extend_from_slice(&features[i * dim..(i + 1) * dim]);
    }
    standardise(&mut x, dim);
    let y: Vec<usize> = chosen.iter().map(|&i| labels[i]).collect();
    let sampled = if n > chosen.len() {
        format!(", {} of {n} items", chosen.len())
    } else {
        format!(", {n} items")
    };
    (x, y, sampled)
}

/// Per-column zero mean, unit variance (constant columns become 0), so every feature counts
/// alike in the t-SNE and UMAP distances, as it does for the probes after their StandardScaler.
fn standardise(x: &mut [f32], dim: usize) {
    let n = x.len() / dim;
    if n == 0 {
        return;
    }
    for d in 0..dim {
        let mean = (0..n).map(|i| f64::from(x[i * dim + d])).sum::<f64>() / n as f64;
        let var = (0..n)
            .map(|i| (f64::from(x[i * dim + d]) - mean).powi(2))
            .sum::<f64>()
            / n as f64;
        let scale = if var > 0.0 { 1.0 / var.sqrt() } else { 0.0 };
        for i in 0..n {
            x[i * dim + d] = ((f64::from(x[i * dim + d]) - mean) * scale) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standardise_gives_zero_mean_unit_variance() {
        let mut x = vec![1.0, 5.0, 3.0, 5.0, 5.0, 5.0];
        standardise(&mut x, 2);
        assert!((x[0] + 1.2247449).abs() < 1e-5 && x[2].abs() < 1e-6);
        assert_eq!([x[1], x[3], x[5]], [0.0; 3], "constant column");
    }
}
