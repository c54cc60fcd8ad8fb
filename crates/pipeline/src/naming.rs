//! Where each model's files go, in one place. Several models live side by side under one rule:
//! a model's *slug* is the hub id's name part, lowercased (`microsoft/wavlm-base-plus` ->
//! `wavlm-base-plus`), or a local folder's name, lowercased; `facebook/hubert-base-ls960` and a
//! folder named `hubert-base` (the original study's `pretrained_models/hubert-base/`) are
//! `hubert` ([`results::model_slug`]); `--slug NAME` overrides. Then
//!
//! - feature stores: `<features>/<task>_features_<slug>[_<layers>].safetensors`;
//! - results (results.json, report.md, CSVs, plots, ablation): `<results>/<task>/<slug>/`;
//! - probes and their scaler: `<models>/<task>_<slug>_{linear,three}_classifier.safetensors`,
//!   `<models>/<task>_<slug>_scaler.safetensors`, except the `hubert` slug, which keeps the
//!   study's `<models>/<task>_{linear,three}_classifier.safetensors`.
//!
//! Stores written before the slug rule were always named `..._features_hubert...`, whatever the
//! model; [`find_store`] still reads such a store for the model it holds (with a warning).

use std::path::{Path, PathBuf};

use anyhow::Result;
use hubert_core::LayerSelection;

use crate::store::FeatureStore;

/// The checkpoint used when `--model` is not given: the original study's.
pub const DEFAULT_MODEL: &str = "facebook/hubert-base-ls960";

/// The slug of [`DEFAULT_MODEL`] (and of the study's `hubert-base` folder): its files keep the
/// study's names.
pub const STUDY_SLUG: &str = "hubert";

/// The `--slug` value parser: 1 to 64 characters of ASCII lowercase letters, digits, `-`, `_`
/// and `.`, not starting with `.` (so it is always one safe path component). Uppercase letters
/// are lowercased.
pub fn parse_slug(s: &str) -> Result<String, String> {
    let slug = s.trim().to_ascii_lowercase();
    let ok = !slug.is_empty()
        && slug.len() <= 64
        && !slug.starts_with('.')
        && slug
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(slug)
    } else {
        Err(format!(
            "--slug expects 1 to 64 of a-z, 0-9, '-', '_', '.' (not starting with '.'), got {s:?}"
        ))
    }
}

/// The slug of `model` (a hub id or a folder), or `slug` when given (`--slug`).
pub fn slug_for(model: &str, slug: Option<&str>) -> String {
    slug.map_or_else(|| results::model_slug(model), str::to_owned)
}

/// `<features_dir>/<task>_features_<slug>.safetensors` for `last`,
/// `..._<slug>_<layers>.safetensors` otherwise (`_all`, `_0-6-12`).
pub fn store_path(features_dir: &Path, task: &str, slug: &str, layers: &LayerSelection) -> PathBuf {
    let suffix = match layers {
        LayerSelection::Last => String::new(),
        other => format!("_{}", other.name().replace(',', "-")),
    };
    features_dir.join(format!("{task}_features_{slug}{suffix}.safetensors"))
}

/// `<results_dir>/<task>/<slug>/`: results.json, report.md, CSVs, plots and ablation outputs.
pub fn results_dir(results_dir: &Path, task: &str, slug: &str) -> PathBuf {
    results_dir.join(task).join(slug)
}

/// The file-name stem of a task's saved probes and scaler: `<task>` for the `hubert` slug (the
/// study's names), `<task>_<slug>` otherwise.
pub fn probe_stem(task: &str, slug: &str) -> String {
    if slug == STUDY_SLUG {
        task.to_owned()
    } else {
        format!("{task}_{slug}")
    }
}

/// `<models_dir>/<stem>_<probe>_classifier.safetensors` ([`probe_stem`]; probe `linear` or
/// `three`).
pub fn probe_path(models_dir: &Path, task: &str, slug: &str, probe: &str) -> PathBuf {
    models_dir.join(format!(
        "{}_{probe}_classifier.safetensors",
        probe_stem(task, slug)
    ))
}

/// `<models_dir>/<stem>_scaler.safetensors` ([`probe_stem`]).
pub fn scaler_path(models_dir: &Path, task: &str, slug: &str) -> PathBuf {
    models_dir.join(format!("{}_scaler.safetensors", probe_stem(task, slug)))
}

/// The slug a store was made for: the one it records, else its model's.
pub fn store_slug(store: &FeatureStore) -> String {
    slug_for(&store.provenance.model, store.provenance.slug.as_deref())
}

/// The first existing store of `slug` among the layer sets `layers` (in order of preference).
/// Failing that, for a slug other than `hubert`, a store with the same layers under the name used
/// before the slug rule (`..._features_hubert...`) whose recorded model has this slug (a warning
/// says so). `None` when there is neither.
pub fn find_store(
    features_dir: &Path,
    task: &str,
    slug: &str,
    layers: &[LayerSelection],
) -> Option<PathBuf> {
    if let Some(p) = layers
        .iter()
        .map(|l| store_path(features_dir, task, slug, l))
        .find(|p| p.is_file())
    {
        return Some(p);
    }
    if slug == STUDY_SLUG {
        return None;
    }
    let legacy = layers
        .iter()
        .map(|l| store_path(features_dir, task, STUDY_SLUG, l))
        .filter(|p| p.is_file())
        .find(|p| FeatureStore::open(p).is_ok_and(|s| store_slug(&s) == slug))?;
    eprintln!(
        "warning: reading {}, named before stores were named by model; rename it to {}",
        legacy.display(),
        legacy
            .file_name()
            .and_then(|n| n.to_str())
            .map(|n| n.replacen(
                &format!("_features_{STUDY_SLUG}"),
                &format!("_features_{slug}"),
                1
            ))
            .unwrap_or_default()
    );
    Some(legacy)
}

/// The file names of the stores of `task` in `features_dir` (`<task>_features_*.safetensors`),
/// sorted: what an error about a missing store lists, so that a store of another model is found.
pub fn stores_of(features_dir: &Path, task: &str) -> Vec<String> {
    let prefix = format!("{task}_features_");
    let mut names: Vec<String> = std::fs::read_dir(features_dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(&prefix) && n.ends_with(".safetensors"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// What a "store not found" error adds: the stores of `task` that do exist, if any, and how to
/// pick one.
pub fn other_stores_hint(features_dir: &Path, task: &str) -> String {
    let names = stores_of(features_dir, task);
    if names.is_empty() {
        String::new()
    } else {
        format!(
            "; {} has {} (pick a model's with --model or --slug)",
            features_dir.display(),
            names.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_named_by_slug() {
        let d = Path::new("f");
        assert_eq!(
            store_path(d, "esc50", "hubert", &LayerSelection::Last),
            Path::new("f/esc50_features_hubert.safetensors")
        );
        assert_eq!(
            store_path(d, "esc50", "wavlm-base-plus", &LayerSelection::All),
            Path::new("f/esc50_features_wavlm-base-plus_all.safetensors")
        );
        assert_eq!(
            store_path(d, "nsynth", "x", &LayerSelection::Indices(vec![0, 6])),
            Path::new("f/nsynth_features_x_0-6.safetensors")
        );
        assert_eq!(
            results_dir(Path::new("r"), "esc50", "hubert"),
            Path::new("r/esc50/hubert")
        );
        let m = Path::new("m");
        assert_eq!(
            probe_path(m, "esc50", "hubert", "linear"),
            Path::new("m/esc50_linear_classifier.safetensors")
        );
        assert_eq!(
            probe_path(m, "esc50", "wavlm-base", "three"),
            Path::new("m/esc50_wavlm-base_three_classifier.safetensors")
        );
        assert_eq!(
            scaler_path(m, "esc50", "wavlm-base"),
            Path::new("m/esc50_wavlm-base_scaler.safetensors")
        );
        assert_eq!(slug_for(DEFAULT_MODEL, None), STUDY_SLUG);
        assert_eq!(
            slug_for("microsoft/wavlm-base-plus", None),
            "wavlm-base-plus"
        );
        assert_eq!(slug_for("microsoft/wavlm-base-plus", Some("w")), "w");
    }

    /// A one-item store of `model` (recording no slug, as stores before slugs did) at `path`.
    fn old_store(path: &Path, model: &str) {
        use crate::store::{write_store, Provenance, StoreContents};
        let provenance = Provenance {
            task: "t".into(),
            model: model.into(),
            revision: None,
            layers: "last".into(),
            layer_indices: vec![hubert_core::StoredLayer::LastHiddenState],
            dtype: "f32".into(),
            slug: None,
            family: None,
        };
        let item = crate::task::Item {
            path: "a.wav".into(),
            label: 0,
            split: crate::task::Partition::Train,
            group: None,
            segment: None,
        };
        let contents = StoreContents {
            provenance: &provenance,
            class_names: &["c".to_string()],
            items: &[item],
            features: &[0.5, 1.5],
            features_std: None,
            features_max: None,
            num_layers: 1,
            dim: 2,
            skipped: &[],
            padded: &[],
            settings: None,
        };
        write_store(path, &contents).unwrap();
    }

    #[test]
    fn stores_named_before_slugs_are_found_for_the_model_they_hold() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let last = [LayerSelection::Last];
        assert_eq!(find_store(d, "t", "wavlm-base", &last), None);
        // The old name held whatever model extracted it.
        let old = store_path(d, "t", STUDY_SLUG, &LayerSelection::Last);
        old_store(&old, "microsoft/wavlm-base");
        assert_eq!(find_store(d, "t", "wavlm-base", &last), Some(old.clone()));
        assert_eq!(find_store(d, "t", "hubert", &last), Some(old.clone()));
        assert_eq!(find_store(d, "t", "wav2vec2-base", &last), None);
        // A store of the new name wins.
        let new = store_path(d, "t", "wavlm-base", &LayerSelection::Last);
        old_store(&new, "microsoft/wavlm-base");
        assert_eq!(find_store(d, "t", "wavlm-base", &last), Some(new));
        assert_eq!(
            stores_of(d, "t"),
            [
                "t_features_hubert.safetensors",
                "t_features_wavlm-base.safetensors"
            ]
        );
        assert!(other_stores_hint(d, "t").contains("t_features_wavlm-base.safetensors"));
        assert_eq!(other_stores_hint(d, "u"), "");
    }

    #[test]
    fn slugs_given_on_the_command_line_are_one_path_component() {
        assert_eq!(parse_slug("WavLM-Base_2.1").unwrap(), "wavlm-base_2.1");
        for bad in ["", "..", ".hidden", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(parse_slug(bad).is_err(), "{bad:?}");
        }
    }
}
