//! The `results.json` schema: one set of serde types, written by each task's `train` and read by
//! `report` (and by anyone else: the file is plain JSON).
//!
//! ```text
//! results/<task>/<slug>/results.json   (results/<task>/results.json before model slugs)
//! {
//!   "task", "description",
//!   "protocol":        {name, description, spec, folds: [{name, train, valid, test,
//!                       classes_without_items}], val_fraction, runs, scaler},
//!   "hyperparameters": {epochs, batch_size, learning_rate, optimizer, betas, eps,
//!                       weight_decay, seed, mlp_hidden},
//!   "features":        {path, sha256, model, revision, slug, family, layers_stored, layer,
//!                       pooling, dim, items, skipped, padded},
//!   "probes":          {"linear": ProbeResults, "mlp": ProbeResults},
//!   "saved_probes", "plots", "predictions",
//!   "per_layer"?       (with --layer all), "layer_weights"?, "layer_weighting"? (--layer weighted)
//! }
//! ```
//!
//! [`Results::write`] writes keys in sorted order at every level (the layout the file has always
//! had), atomically. [`Results::read`] accepts files written before fields were added (every
//! later field has a default) and names the file and the offending key on error.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use metrics::{Averages, ClassMetrics, MeanStd};
use serde::{Deserialize, Serialize};

/// A whole `results.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// Task name (`esc50`, `esc10`, ...).
    pub task: String,
    /// One-line description of the task.
    #[serde(default)]
    pub description: String,
    /// How items were divided.
    pub protocol: ProtocolSummary,
    /// Training hyper-parameters.
    pub hyperparameters: Hyperparameters,
    /// The feature store the probes trained on.
    pub features: FeaturesSummary,
    /// Probe name (`linear`, `mlp`) -> its results on the reported layer.
    pub probes: BTreeMap<String, ProbeResults>,
    /// Paths of the saved probes.
    #[serde(default)]
    pub saved_probes: Vec<String>,
    /// File names of the PNG plots next to results.json.
    #[serde(default)]
    pub plots: Vec<String>,
    /// Probe name -> file name of its per-item test predictions (CSV) next to results.json.
    #[serde(default)]
    pub predictions: BTreeMap<String, String>,
    /// One entry per trained layer (`--layer all`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_layer: Option<Vec<LayerEntry>>,
    /// Probe name -> learned layer weights (`--layer weighted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_weights: Option<BTreeMap<String, LayerWeights>>,
    /// How the layers were combined (`--layer weighted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_weighting: Option<String>,
}

/// `protocol`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProtocolSummary {
    /// The `--split` value that reproduces it (`official`, `random`, ...).
    pub name: String,
    /// Human-readable description.
    #[serde(default)]
    pub description: String,
    /// The protocol as the pipeline serialises it (`{"kind": ..., ...}`).
    #[serde(default)]
    pub spec: serde_json::Value,
    /// Each fold's part sizes.
    #[serde(default)]
    pub folds: Vec<FoldSummary>,
    /// Fraction of each training part held out for best-epoch selection.
    #[serde(default)]
    pub val_fraction: f64,
    /// Seeds per fold.
    #[serde(default = "one")]
    pub runs: usize,
    /// How features were standardised.
    #[serde(default)]
    pub scaler: String,
}

fn one() -> usize {
    1
}

/// One fold of `protocol.folds`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoldSummary {
    /// `fold1`, `test`, `random`, ...
    pub name: String,
    /// Training items.
    pub train: usize,
    /// Validation items.
    pub valid: usize,
    /// Test items.
    pub test: usize,
    /// Part (`train`, `valid`, `test`) -> class names with no item in it (non-empty parts only).
    #[serde(default)]
    pub classes_without_items: BTreeMap<String, Vec<String>>,
}

/// `hyperparameters`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hyperparameters {
    /// Training epochs.
    pub epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Adam learning rate.
    pub learning_rate: f64,
    /// `Adam`.
    pub optimizer: String,
    /// Adam's betas.
    pub betas: [f64; 2],
    /// Adam's eps.
    pub eps: f64,
    /// L2 penalty.
    pub weight_decay: f64,
    /// Seed of the first run.
    pub seed: u64,
    /// Hidden width of the MLP probe.
    pub mlp_hidden: usize,
}

/// `features`: the store the probes read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeaturesSummary {
    /// The store's path.
    pub path: String,
    /// sha256 of the store file.
    pub sha256: String,
    /// Model id or local path.
    pub model: String,
    /// Hub revision, when known.
    pub revision: Option<String>,
    /// The model's slug, the name its files are filed under ([`model_slug`] or `--slug`);
    /// `None` in files written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slug: Option<String>,
    /// The model family (`config.json`'s `model_type`: `hubert`, `wav2vec2`, `wavlm`,
    /// `data2vec-audio`); `None` when the store did not record it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// The stored layer set (`last`, `all`, `0,6,12`).
    pub layers_stored: String,
    /// The reported layer: `"last_hidden_state"`, a hidden-state index, or `"weighted"`.
    pub layer: serde_json::Value,
    /// Pooling over frames (`mean`).
    pub pooling: String,
    /// Feature width.
    pub dim: usize,
    /// Items in the store.
    pub items: usize,
    /// Items left out because they could not be decoded.
    #[serde(default)]
    pub skipped: Vec<SkippedItem>,
    /// Items shorter than the model's receptive field, zero-padded.
    #[serde(default)]
    pub padded: usize,
}

/// An item left out of the store (`--skip-bad`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedItem {
    /// Index into the dataset's items.
    pub index: usize,
    /// The item's path.
    pub path: String,
    /// Why.
    pub error: String,
}

/// One probe's aggregated results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResults {
    /// Accuracy over folds and runs.
    pub accuracy: MeanStd,
    /// Macro-F1 over folds and runs: each evaluation's scikit-learn `average="macro"` (over the
    /// classes in its test labels or predictions; absent classes left out).
    pub macro_f1: MeanStd,
    /// Mean F1 over every class name of the store, absent classes counted as 0 (scikit-learn
    /// with `labels=range(C)`), over folds and runs. For comparison only; never the headline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macro_f1_all_classes: Option<MeanStd>,
    /// Balanced accuracy over folds and runs.
    pub balanced_accuracy: MeanStd,
    /// Every evaluation: fold name, run, seed, accuracy, macro-F1, best epoch.
    pub evaluations: Vec<Evaluation>,
    /// Summed over folds and runs; rows = true class.
    pub confusion_matrix: Vec<Vec<u64>>,
    /// Class names (row/column order of the confusion matrix).
    pub classes: Vec<String>,
    /// Per-class precision / recall / F1 / support over all test predictions pooled; a class
    /// with no test item and no prediction in any evaluation has `absent: true` and `null`
    /// scores.
    pub per_class: Vec<ClassMetrics>,
    /// Classes absent from every evaluation (no test item, never predicted), by name.
    #[serde(default)]
    pub absent_classes: Vec<String>,
    /// scikit-learn's macro average of precision / recall / F1 over all test predictions
    /// pooled (over the classes not absent from the pool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooled_macro_avg: Option<Averages>,
    /// Support-weighted average over all test predictions pooled (`average="weighted"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooled_weighted_avg: Option<Averages>,
    /// Task-specific metrics over all test predictions (ICBHI: Se, Sp, score).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_metrics: Option<serde_json::Value>,
    /// Mean training time per fold x run, seconds.
    pub train_seconds: f64,
}

/// One fold x run evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Fold name.
    pub fold: String,
    /// Run number (0-based).
    pub run: usize,
    /// Seed.
    pub seed: u64,
    /// Test accuracy.
    pub accuracy: f64,
    /// Test macro-F1, scikit-learn's `average="macro"` (absent classes left out).
    pub macro_f1: f64,
    /// Test balanced accuracy.
    pub balanced_accuracy: f64,
    /// Epoch whose weights were kept (validation), if any.
    pub best_epoch: Option<usize>,
    /// Items in train / valid / test.
    pub sizes: [usize; 3],
    /// Classes with no test item and no prediction in this evaluation, by name: left out of
    /// its macro-F1.
    #[serde(default)]
    pub absent_classes: Vec<String>,
}

/// One entry of `per_layer`: the layer and each probe's scores on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerEntry {
    /// The hidden-state index (or `"last_hidden_state"`).
    pub layer: serde_json::Value,
    /// Probe name -> its scores on this layer.
    #[serde(flatten)]
    pub probes: BTreeMap<String, LayerScore>,
}

/// A probe's scores on one layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerScore {
    /// Mean accuracy over folds and runs.
    pub accuracy: f64,
    /// Its standard deviation.
    pub accuracy_std: f64,
    /// Mean macro-F1 over folds and runs.
    pub macro_f1: f64,
}

/// Learned layer weights of one probe (`--layer weighted`): mean and std over folds x runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerWeights {
    /// The stored layers, in weight order.
    pub layers: Vec<serde_json::Value>,
    /// Mean weight per layer.
    pub mean: Vec<f64>,
    /// Standard deviation per layer.
    pub std: Vec<f64>,
}

impl Results {
    /// Reads a `results.json`; errors name the file and the key that does not fit.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::from_json(&text).with_context(|| format!("{}: not a results.json", path.display()))
    }

    /// Parses a `results.json` string.
    pub fn from_json(text: &str) -> Result<Self> {
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let at = e.path().to_string();
            anyhow::anyhow!("at `{at}`: {}", e.into_inner())
        })
    }

    /// The JSON text: pretty-printed, keys sorted at every level.
    pub fn to_json(&self) -> Result<String> {
        // Through `Value`, whose maps are sorted, so the key order does not depend on the order
        // fields are declared in.
        Ok(serde_json::to_string_pretty(&serde_json::to_value(self)?)?)
    }

    /// Writes the file atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        artifacts::atomic_write(path, self.to_json()?.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

/// The short name a model's features and results are filed under: the hub id's name part
/// lowercased (`microsoft/wavlm-base-plus` -> `wavlm-base-plus`), or a local folder's name
/// lowercased; `facebook/hubert-base-ls960` and a folder named `hubert-base` (the original
/// study's `pretrained_models/hubert-base/`) are `hubert`, the name the study's files use.
/// Characters other than ASCII letters, digits, `-`, `_` and `.` become `_`, so a slug is always
/// one safe path component.
pub fn model_slug(model: &str) -> String {
    let trimmed = model.trim_end_matches(['/', '\\']);
    let name = trimmed
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(trimmed)
        .to_ascii_lowercase();
    let slug: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match slug.as_str() {
        "hubert-base-ls960" | "hubert-base" => "hubert".into(),
        "" | "." | ".." => "model".into(),
        _ => slug,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn model_slugs_follow_the_naming_rule() {
        for (model, slug) in [
            ("facebook/hubert-base-ls960", "hubert"),
            ("models/hubert-base", "hubert"),
            ("models/hubert-base/", "hubert"),
            ("pretrained_models/hubert-base", "hubert"),
            ("microsoft/wavlm-base-plus", "wavlm-base-plus"),
            ("facebook/wav2vec2-large-lv60", "wav2vec2-large-lv60"),
            ("ntu-spml/distilhubert", "distilhubert"),
            ("/data/My Model", "my_model"),
            ("..", "model"),
        ] {
            assert_eq!(model_slug(model), slug, "{model}");
        }
    }

    use super::*;

    fn ms(mean: f64) -> MeanStd {
        MeanStd {
            mean,
            std: 0.0,
            per_fold: vec![mean],
        }
    }

    fn sample() -> Results {
        let probe = ProbeResults {
            accuracy: ms(0.5),
            macro_f1: ms(0.4),
            macro_f1_all_classes: None,
            balanced_accuracy: ms(0.5),
            evaluations: vec![],
            confusion_matrix: vec![vec![1, 0], vec![1, 0]],
            classes: vec!["a".into(), "b".into()],
            per_class: vec![],
            absent_classes: vec![],
            pooled_macro_avg: None,
            pooled_weighted_avg: None,
            task_metrics: None,
            train_seconds: 0.1,
        };
        Results {
            task: "t".into(),
            description: "d".into(),
            protocol: ProtocolSummary {
                name: "official".into(),
                description: String::new(),
                spec: serde_json::json!({"kind": "predefined_folds"}),
                folds: vec![],
                val_fraction: 0.0,
                runs: 1,
                scaler: String::new(),
            },
            hyperparameters: Hyperparameters {
                epochs: 1,
                batch_size: 8,
                learning_rate: 1e-3,
                optimizer: "Adam".into(),
                betas: [0.9, 0.999],
                eps: 1e-8,
                weight_decay: 0.0,
                seed: 42,
                mlp_hidden: 256,
            },
            features: FeaturesSummary {
                path: "f".into(),
                sha256: "0".repeat(64),
                model: "m".into(),
                revision: None,
                slug: Some("m".into()),
                family: Some("hubert".into()),
                layers_stored: "all".into(),
                layer: serde_json::json!(2),
                pooling: "mean".into(),
                dim: 4,
                items: 2,
                skipped: vec![],
                padded: 0,
            },
            probes: BTreeMap::from([("linear".to_string(), probe)]),
            saved_probes: vec![],
            plots: vec![],
            predictions: BTreeMap::new(),
            per_layer: Some(vec![LayerEntry {
                layer: serde_json::json!(0),
                probes: BTreeMap::from([(
                    "linear".to_string(),
                    LayerScore {
                        accuracy: 0.5,
                        accuracy_std: 0.0,
                        macro_f1: 0.4,
                    },
                )]),
            }]),
            layer_weights: None,
            layer_weighting: None,
        }
    }

    #[test]
    fn round_trips_with_sorted_keys() {
        let r = sample();
        let text = r.to_json().unwrap();
        assert_eq!(Results::from_json(&text).unwrap(), r);
        let keys: Vec<&str> = ["\"description\"", "\"features\"", "\"hyperparameters\""]
            .into_iter()
            .collect();
        let pos: Vec<usize> = keys.iter().map(|k| text.find(k).unwrap()).collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "sorted: {text}");
        // per_layer entries are flat: {"layer": 0, "linear": {...}}
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["per_layer"][0]["linear"]["accuracy"], 0.5);
        assert!(
            v.get("layer_weights").is_none(),
            "absent options are left out"
        );
    }

    #[test]
    fn files_without_slug_and_family_still_read() {
        let mut v = serde_json::to_value(sample()).unwrap();
        let features = v["features"].as_object_mut().unwrap();
        features.remove("slug");
        features.remove("family");
        let r = Results::from_json(&v.to_string()).unwrap();
        assert_eq!((r.features.slug, r.features.family), (None, None));
        let text = sample().to_json().unwrap();
        assert!(text.contains("\"slug\": \"m\"") && text.contains("\"family\": \"hubert\""));
    }

    #[test]
    fn errors_name_the_key() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["probes"]["linear"]["accuracy"]["mean"] = serde_json::json!("high");
        let err = Results::from_json(&v.to_string()).unwrap_err().to_string();
        assert!(err.contains("probes.linear.accuracy.mean"), "{err}");
    }
}
