//! What a dataset is to the pipeline: items (file, label, fold or split, group), class names,
//! the official protocol, and where its archives come from.
//!
//! Metadata is untrusted input: [`Dataset::validate`] (run by [`Task::load_checked`], which the
//! command line uses) checks every label against the class list, caps the class count, and
//! confines item paths lexically to the data folder (no `..`, no absolute path), so a data folder
//! that is itself a symlink keeps working; [`read_metadata`] refuses metadata files that are not
//! regular files (a FIFO would hang the reader) or larger than [`MAX_METADATA_BYTES`].

use std::io::Read;
use std::path::{Component, Path, PathBuf};

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

/// Most classes a dataset may have (the six have at most 1,000): a class index read from a file
/// beyond it is an error, not an allocation.
pub const MAX_CLASSES: usize = 100_000;

/// Largest metadata file read (NSynth's training `examples.json`, the largest, is about 130 MB).
pub const MAX_METADATA_BYTES: u64 = 1 << 30;

impl Dataset {
    /// A dataset rooted at `root` (the folder item paths are relative to), as a task's
    /// [`Task::load`] builds it; [`Dataset::validate`] checks it.
    pub fn new(
        root: &Path,
        class_names: Vec<String>,
        items: Vec<Item>,
        notes: Vec<String>,
    ) -> Self {
        Self {
            root: root.to_path_buf(),
            class_names,
            items,
            notes,
        }
    }

    /// The absolute path of an item.
    pub fn path_of(&self, item: &Item) -> PathBuf {
        self.root.join(&item.path)
    }

    /// Checks what the metadata files decided: 1 to [`MAX_CLASSES`] classes, every label a
    /// class index, every item path a plain relative path inside the data folder
    /// ([`check_item_path`]), every segment finite with start <= end. Errors name the item.
    pub fn validate(&self) -> anyhow::Result<()> {
        let n = self.class_names.len();
        if n == 0 || n > MAX_CLASSES {
            anyhow::bail!(
                "{}: the metadata defines {n} classes; expected 1 to {MAX_CLASSES}",
                self.root.display()
            );
        }
        for item in &self.items {
            check_item_path(&item.path).map_err(|why| {
                anyhow::anyhow!(
                    "{}: the metadata lists {:?}, which {why}; item paths must stay inside \
                     the data folder",
                    self.root.display(),
                    item.path
                )
            })?;
            if item.label >= n {
                anyhow::bail!(
                    "{}: item {:?} has label {}, but there are {n} classes",
                    self.root.display(),
                    item.path,
                    item.label
                );
            }
            if let Some((start, end)) = item.segment {
                if !(start.is_finite() && end.is_finite() && start <= end) {
                    anyhow::bail!(
                        "{}: item {:?} has the segment [{start}, {end}) s",
                        self.root.display(),
                        item.path
                    );
                }
            }
        }
        Ok(())
    }
}

/// Whether `rel` (an item path from a metadata file) stays inside the data folder lexically: not
/// empty, not absolute, no `..`, no NUL, no backslash (Windows separators would escape on
/// Windows). Symlinks are not resolved, so a data folder that is itself a link keeps working.
/// `Err` says what is wrong.
pub fn check_item_path(rel: &str) -> Result<(), &'static str> {
    if rel.is_empty() {
        return Err("is empty");
    }
    if rel.contains('\0') {
        return Err("contains a NUL byte");
    }
    if rel.contains('\\') {
        return Err("contains a backslash");
    }
    for component in Path::new(rel).components() {
        match component {
            Component::ParentDir => return Err("contains `..`"),
            Component::RootDir | Component::Prefix(_) => return Err("is absolute"),
            Component::CurDir | Component::Normal(_) => {}
        }
    }
    Ok(())
}

/// Reads a metadata file (a CSV, a list, a JSON table): refuses anything that is not a regular
/// file (a FIFO, a device, a directory: reading those could hang or never end) and files over
/// [`MAX_METADATA_BYTES`], with errors naming the file; `hint` is appended to a not-found error.
pub fn read_metadata(path: &Path, hint: &str) -> anyhow::Result<Vec<u8>> {
    check_regular_file(path, hint)?;
    let file = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_METADATA_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_METADATA_BYTES {
        anyhow::bail!(
            "{}: larger than {MAX_METADATA_BYTES} bytes; not a metadata file of this dataset",
            path.display()
        );
    }
    Ok(bytes)
}

/// Errors unless `path` is a regular file (links followed) of at most [`MAX_METADATA_BYTES`]:
/// "not found" with `hint`, or what it is instead.
pub fn check_regular_file(path: &Path, hint: &str) -> anyhow::Result<()> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            anyhow::bail!("{} not found; {hint}", path.display())
        }
        Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
    };
    if !meta.is_file() {
        anyhow::bail!(
            "{} is not a regular file (it is {}); metadata must be a regular file",
            path.display(),
            file_kind(&meta.file_type())
        );
    }
    if meta.len() > MAX_METADATA_BYTES {
        anyhow::bail!(
            "{}: {} bytes, more than the {MAX_METADATA_BYTES} a metadata file may have",
            path.display(),
            meta.len()
        );
    }
    Ok(())
}

pub use audio_io::file_kind;

/// A dataset task: the only code a task binary has to provide.
pub trait Task: Send + Sync {
    /// Name used for files, with the model's slug ([`crate::naming`]):
    /// `features/<name>_features_<slug>.safetensors`, `results/<name>/<slug>/`,
    /// `models/<name>_linear_classifier.safetensors` (e.g. `esc50`, `esc10`).
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

    /// [`Task::load`], then [`Dataset::validate`]: what the command line uses, so that no label,
    /// class count or path read from a metadata file is used unchecked.
    fn load_checked(&self, data_dir: &Path) -> anyhow::Result<Dataset> {
        let dataset = self.load(data_dir)?;
        dataset.validate()?;
        Ok(dataset)
    }

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

    fn dataset(paths: &[&str], labels: &[usize], classes: usize) -> Dataset {
        Dataset {
            root: PathBuf::from("data/x"),
            class_names: (0..classes).map(|c| format!("c{c}")).collect(),
            items: paths
                .iter()
                .zip(labels)
                .map(|(p, &label)| Item {
                    path: (*p).to_owned(),
                    label,
                    split: Partition::Fold(1),
                    group: None,
                    segment: None,
                })
                .collect(),
            notes: Vec::new(),
        }
    }

    #[test]
    fn metadata_paths_are_confined_lexically() {
        assert!(check_item_path("audio/1-100032-A-0.wav").is_ok());
        assert!(check_item_path("./audio/a.wav").is_ok());
        assert_eq!(check_item_path("../../audio/x.wav"), Err("contains `..`"));
        assert_eq!(check_item_path("audio/../../x.wav"), Err("contains `..`"));
        assert_eq!(check_item_path("/etc/passwd"), Err("is absolute"));
        assert_eq!(check_item_path("a\\..\\b"), Err("contains a backslash"));
        assert!(check_item_path("").is_err());
        let err = dataset(&["audio/../../audio/x.wav"], &[0], 1)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("audio/../../audio/x.wav") && err.contains("`..`"),
            "{err}"
        );
    }

    #[test]
    fn labels_and_class_counts_are_checked() {
        assert!(dataset(&["a.wav"], &[1], 2).validate().is_ok());
        let err = dataset(&["a.wav"], &[2], 2)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("label 2") && err.contains("2 classes"),
            "{err}"
        );
        assert!(dataset(&["a.wav"], &[0], 0).validate().is_err());
        let mut d = dataset(&["a.wav"], &[0], 1);
        d.items[0].segment = Some((f64::NAN, 1.0));
        assert!(d.validate().is_err());
    }

    #[test]
    fn metadata_must_be_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("meta.csv");
        std::fs::write(&csv, b"a,b\n").unwrap();
        assert_eq!(read_metadata(&csv, "hint").unwrap(), b"a,b\n");
        let err = read_metadata(&dir.path().join("none.csv"), "run download")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not found; run download"), "{err}");
        let err = read_metadata(dir.path(), "h").unwrap_err().to_string();
        assert!(err.contains("a directory"), "{err}");
        #[cfg(unix)]
        {
            let fifo = dir.path().join("fifo.csv");
            let ok = std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success();
            assert!(ok);
            // Returns at once (reading would block forever: nobody writes).
            let err = read_metadata(&fifo, "h").unwrap_err().to_string();
            assert!(err.contains("fifo.csv") && err.contains("a FIFO"), "{err}");
        }
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
