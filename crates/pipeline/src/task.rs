//! What a dataset is to the pipeline: items (file, label, fold or split, group), class names,
//! the official protocol, and where its archives come from.

use std::path::{Path, PathBuf};

use crate::download::Resource;
pub use crate::item::{Item, Partition};
use crate::protocol::Protocol;

/// A dataset as parsed from its on-disk layout.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The root the item paths are relative to.
    pub root: PathBuf,
    /// Class names, indexed by label.
    pub class_names: Vec<String>,
    /// Every item, in a fixed, documented order (the feature store keeps it).
    pub items: Vec<Item>,
    /// Facts worth reporting (e.g. classes without test examples, overlapping patients).
    pub notes: Vec<String>,
}

impl Dataset {
    /// The absolute path of an item.
    pub fn path_of(&self, item: &Item) -> PathBuf {
        self.root.join(&item.path)
    }
}

/// A dataset task: the only code a task binary has to provide.
pub trait Task: Send + Sync {
    /// Name used for files: `features/<name>_features_hubert.safetensors`,
    /// `results/<name>/`, `models/<name>_linear_classifier.safetensors` (e.g. `esc50`, `esc10`).
    fn name(&self) -> String;

    /// A one-line description for reports.
    fn description(&self) -> String;

    /// The default `--data-dir`: the folder the official archive unpacks into.
    fn default_data_dir(&self) -> PathBuf;

    /// The official archives. Empty when the host needs a manual download: then
    /// [`Task::manual_download`] says what to do.
    fn resources(&self) -> Vec<Resource>;

    /// Instructions for a manual download, when the host requires one.
    fn manual_download(&self, _data_dir: &Path) -> Option<String> {
        None
    }

    /// Where the archives unpack so that `data_dir` appears: its parent by default.
    fn unpack_dir(&self, data_dir: &Path) -> PathBuf {
        data_dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    }

    /// Called by `download` after each resource is fetched, verified and unpacked, with the path
    /// of the downloaded file (in the download cache): a task whose layout needs a plain file (a
    /// split list, a metadata table) inside `data_dir` copies it there. Does nothing by default.
    fn after_fetch(
        &self,
        data_dir: &Path,
        resource: &Resource,
        downloaded: &Path,
    ) -> anyhow::Result<()> {
        let _ = (data_dir, resource, downloaded);
        Ok(())
    }

    /// Whether `data_dir` looks complete enough to skip `download` in `run`.
    fn is_present(&self, data_dir: &Path) -> bool;

    /// Parses the layout under `data_dir`; errors say what was expected where.
    fn load(&self, data_dir: &Path) -> anyhow::Result<Dataset>;

    /// The official protocol (`--split official`).
    fn official_protocol(&self) -> Protocol;

    /// The task-specific `--split` names beyond `official` and `random` (e.g. `chapter`), known
    /// before the task is built so the command line can check and list them.
    fn split_names() -> &'static [&'static str]
    where
        Self: Sized,
    {
        &[]
    }

    /// The protocol of a task-specific `--split` name (one of [`Task::split_names`]).
    fn custom_protocol(&self, name: &str, test_fraction: f64, seed: u64) -> Option<Protocol> {
        let _ = (name, test_fraction, seed);
        None
    }

    /// Turns a decoded 16 kHz clip into the model input for `item`: cuts `item.segment` by
    /// default; tasks add padding rules (Speech Commands pads to 1 s).
    fn prepare(&self, item: &Item, samples: Vec<f32>) -> Vec<f32> {
        match item.segment {
            Some((start, end)) => cut_segment(&samples, start, end),
            None => samples,
        }
    }

    /// Restricts `extract` to the chunks that hold items of this partition (NSynth's
    /// `extract --part train|valid|test`). The store still covers every item: extracting each
    /// partition in turn, in any order, fills the same chunks as one full extraction (a chunk
    /// straddling two partitions is done by whichever comes first), and the store is assembled
    /// once every chunk exists. `None` (the default): every chunk.
    fn extract_only(&self) -> Option<Partition> {
        None
    }

    /// Extra metrics for results.json (ICBHI: sensitivity, specificity, score).
    fn extra_metrics(
        &self,
        _y_true: &[usize],
        _y_pred: &[usize],
        _class_names: &[String],
    ) -> Option<serde_json::Value> {
        None
    }
}

/// `samples[start*16000 .. end*16000]`, clamped to the clip.
pub fn cut_segment(samples: &[f32], start: f64, end: f64) -> Vec<f32> {
    let to_index = |t: f64| ((t.max(0.0) * 16_000.0).round() as usize).min(samples.len());
    let (a, b) = (to_index(start), to_index(end));
    samples[a..b.max(a)].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_round_trips_as_text() {
        for p in [
            Partition::Fold(3),
            Partition::Train,
            Partition::Valid,
            Partition::Test,
        ] {
            let s = serde_json::to_string(&p).unwrap();
            assert_eq!(serde_json::from_str::<Partition>(&s).unwrap(), p);
        }
        assert_eq!(Partition::Fold(10).to_string(), "fold10");
        assert!("fold".parse::<Partition>().is_err());
    }

    #[test]
    fn segments_are_clamped() {
        let x: Vec<f32> = (0..32_000).map(|i| i as f32).collect();
        assert_eq!(cut_segment(&x, 0.5, 1.0).len(), 8_000);
        assert_eq!(cut_segment(&x, 0.5, 1.0)[0], 8_000.0);
        assert_eq!(cut_segment(&x, 1.5, 9.0).len(), 8_000);
        assert!(cut_segment(&x, 3.0, 2.0).is_empty());
    }
}
