//! UrbanSound8K: 8,732 labelled slices (at most 4 s) of urban sounds in 10 classes, cut from
//! Freesound recordings and distributed in 10 predefined folds. Layout of the official archive
//! (`UrbanSound8K/`):
//!
//! ```text
//! UrbanSound8K/metadata/UrbanSound8K.csv
//!     slice_file_name,fsID,start,end,salience,fold,classID,class
//! UrbanSound8K/audio/fold1 .. fold10/[fsID]-[classID]-[occurrenceID]-[sliceID].wav
//! ```
//!
//! The audio keeps the sample rate, bit depth and channel count of the Freesound upload, so the
//! files mix rates (8 to 96 kHz), 16/24-bit PCM and 32-bit float, mono and stereo; extraction
//! decodes all of them to 16 kHz mono.
//!
//! Labels are the `classID` column; class names come from the `class` column, in classID order:
//! air_conditioner, car_horn, children_playing, dog_bark, drilling, engine_idling, gun_shot,
//! jackhammer, siren, street_music. (A metadata file listing only some classes, such as a
//! subset, is renumbered in classID order.) Each item's group is its `fsID`, the Freesound
//! recording it was cut from.
//!
//! # Protocols
//!
//! - `--split official` (default): 10-fold cross-validation over the metadata's `fold` column,
//!   averaged over all ten folds, as the authors ask ("use 10-fold, not 5-fold"; fold
//!   difficulty differs). Slices of one recording share a fold, and validation parts
//!   (`--val-fraction`) keep each fsID whole.
//! - `--split random`: the original study's stratified 80/20 split. **It leaks**: slices of
//!   one recording (one fsID) land in both training and test, which inflates scores (the
//!   authors' "don't reshuffle" rule). Use it only to reproduce that study.
//! - `--split group-random`: a stratified random split that keeps every fsID whole.
//!
//! # Download
//!
//! The official distribution is Zenodo record 1203745
//! (<https://zenodo.org/records/1203745>, licence CC BY-NC 4.0): one archive,
//! [`ARCHIVE_URL`] (about 6 GB), that unpacks to `UrbanSound8K/`. No md5 is pinned: neither Zenodo's
//! page nor the public loaders we checked give one, so the layout is checked after unpacking instead.
//! If the automatic download fails, `download` explains where to fetch the archive and where to
//! put it (or the unpacked folder).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use pipeline::download::{Resource, Unpack};
use pipeline::table::{check_files_exist, read_csv, Table};
use pipeline::{Dataset, Item, Partition, Protocol, Task};

/// The official archive (Zenodo record 1203745).
pub const ARCHIVE_URL: &str =
    "https://zenodo.org/records/1203745/files/UrbanSound8K.tar.gz?download=1";

/// The Zenodo record page.
pub const RECORD_URL: &str = "https://zenodo.org/records/1203745";

/// The archive's file name.
pub const ARCHIVE_NAME: &str = "UrbanSound8K.tar.gz";

/// The metadata file, relative to the data directory.
pub const METADATA: &str = "metadata/UrbanSound8K.csv";

/// Number of official folds.
pub const NUM_FOLDS: u32 = 10;

const COLUMNS: [&str; 8] = [
    "slice_file_name",
    "fsID",
    "start",
    "end",
    "salience",
    "fold",
    "classID",
    "class",
];

/// Task options (none yet: the protocol is chosen with `--split`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct UrbanSound8kOptions {}

/// The UrbanSound8K task.
#[derive(Debug, Clone)]
pub struct UrbanSound8k {
    _options: UrbanSound8kOptions,
}

impl UrbanSound8k {
    /// A task with these options.
    pub fn new(options: &UrbanSound8kOptions) -> Result<Self> {
        Ok(Self {
            _options: options.clone(),
        })
    }
}

/// The `(fsID, classID)` encoded in a slice file name `[fsID]-[classID]-[occurrenceID]-[sliceID].wav`,
/// or `None` when the name does not follow that pattern.
pub fn parse_slice_name(name: &str) -> Option<(u64, usize)> {
    let stem = name.strip_suffix(".wav")?;
    let parts: Vec<&str> = stem.split('-').collect();
    if parts.len() != 4 {
        return None;
    }
    let fs_id = parts[0].parse().ok()?;
    let class_id = parts[1].parse().ok()?;
    parts[2].parse::<u64>().ok()?;
    parts[3].parse::<u64>().ok()?;
    Some((fs_id, class_id))
}

struct Row {
    file: String,
    fs_id: u64,
    fold: u32,
    class_id: usize,
}

impl Task for UrbanSound8k {
    fn name(&self) -> String {
        "urbansound8k".into()
    }

    fn description(&self) -> String {
        "UrbanSound8K urban sound classification (10 classes, 10 official folds)".into()
    }

    fn default_data_dir(&self) -> PathBuf {
        PathBuf::from("data/UrbanSound8K")
    }

    fn resources(&self) -> Vec<Resource> {
        vec![Resource {
            url: ARCHIVE_URL.into(),
            file_name: ARCHIVE_NAME.into(),
            // Not pinned: no published checksum (see the module docs).
            md5: None,
            size: None,
            unpack: Unpack::TarGz,
        }]
    }

    fn manual_download(&self, data_dir: &Path) -> Option<String> {
        let cache = self.unpack_dir(data_dir).join(".downloads");
        Some(format!(
            "To get UrbanSound8K by hand: open {RECORD_URL} (Zenodo record 1203745, CC BY-NC 4.0) \
             and download {ARCHIVE_NAME} (about 6 GB) from {ARCHIVE_URL}. Either save it as {} \
             and re-run `urbansound8k download` (it unpacks it), or unpack it yourself so that \
             {} and {} exist (the archive's top folder UrbanSound8K/ is the data directory; pass \
             --data-dir if you put it elsewhere).",
            cache.join(ARCHIVE_NAME).display(),
            data_dir.join(METADATA).display(),
            data_dir.join("audio/fold1").display(),
        ))
    }

    fn is_present(&self, data_dir: &Path) -> bool {
        data_dir.join(METADATA).is_file() && data_dir.join("audio").is_dir()
    }

    fn load(&self, data_dir: &Path) -> Result<Dataset> {
        let hint = "run `urbansound8k download` or pass --data-dir";
        let csv = data_dir.join(METADATA);
        let table = read_csv(&csv, &COLUMNS, hint)?;
        if !data_dir.join("audio").is_dir() {
            bail!("{} not found; {hint}", data_dir.join("audio").display());
        }
        let mut rows = Vec::with_capacity(table.rows.len());
        let mut names: BTreeMap<usize, String> = BTreeMap::new();
        let mut misnamed: Vec<String> = Vec::new();
        let mut folds_of: BTreeMap<u64, BTreeSet<u32>> = BTreeMap::new();
        for (line, row) in &table.rows {
            let fs_id: u64 = Table::parse(&csv, *line, row, "fsID")?;
            let _: f64 = Table::parse(&csv, *line, row, "start")?;
            let _: f64 = Table::parse(&csv, *line, row, "end")?;
            let _: f64 = Table::parse(&csv, *line, row, "salience")?;
            let fold: u32 = Table::parse(&csv, *line, row, "fold")?;
            let class_id: usize = Table::parse(&csv, *line, row, "classID")?;
            if !(1..=NUM_FOLDS).contains(&fold) {
                bail!(
                    "{}: line {line}: fold {fold} is not in 1..={NUM_FOLDS}",
                    csv.display()
                );
            }
            let file = row["slice_file_name"].clone();
            if file.is_empty() || file.contains(['/', '\\']) {
                bail!(
                    "{}: line {line}: slice_file_name {file:?} is not a plain file name",
                    csv.display()
                );
            }
            let class = row["class"].clone();
            if let Some(prev) = names.insert(class_id, class.clone()) {
                if prev != class {
                    bail!(
                        "{}: line {line}: classID {class_id} is {class:?} here but {prev:?} above",
                        csv.display()
                    );
                }
            }
            if parse_slice_name(&file) != Some((fs_id, class_id)) {
                misnamed.push(file.clone());
            }
            folds_of.entry(fs_id).or_default().insert(fold);
            rows.push(Row {
                file,
                fs_id,
                fold,
                class_id,
            });
        }
        if rows.is_empty() {
            bail!("{}: no slices listed", csv.display());
        }
        // Labels: classIDs in order (0..=9 on the real data; a subset is renumbered).
        let used: Vec<usize> = names.keys().copied().collect();
        let class_names: Vec<String> = names.values().cloned().collect();
        let items: Vec<Item> = rows
            .into_iter()
            .map(|r| Item {
                path: format!("audio/fold{}/{}", r.fold, r.file),
                label: used
                    .binary_search(&r.class_id)
                    .expect("classID collected above"),
                split: Partition::Fold(r.fold),
                group: Some(r.fs_id.to_string()),
                segment: None,
            })
            .collect();
        check_files_exist(data_dir, items.iter().map(|it| it.path.as_str()), hint)?;

        let mut notes = Vec::new();
        if !misnamed.is_empty() {
            notes.push(format!(
                "{} slice file names do not match their fsID/classID columns (e.g. {}); labels \
                 come from the classID column",
                misnamed.len(),
                misnamed[0]
            ));
        }
        let split_ids: Vec<u64> = folds_of
            .iter()
            .filter(|(_, f)| f.len() > 1)
            .map(|(id, _)| *id)
            .collect();
        if !split_ids.is_empty() {
            notes.push(format!(
                "{} recordings (fsID) have slices in more than one fold (e.g. {}): the folds \
                 are not recording-disjoint",
                split_ids.len(),
                split_ids[0]
            ));
        }
        let folds: BTreeSet<u32> = items
            .iter()
            .filter_map(|it| match it.split {
                Partition::Fold(k) => Some(k),
                _ => None,
            })
            .collect();
        if folds.len() < NUM_FOLDS as usize {
            notes.push(format!(
                "only {} of the {NUM_FOLDS} official folds have slices",
                folds.len()
            ));
        }
        Ok(Dataset {
            root: data_dir.to_path_buf(),
            class_names,
            items,
            notes,
        })
    }

    fn official_protocol(&self) -> Protocol {
        Protocol::PredefinedFolds
    }

    fn split_names() -> &'static [&'static str] {
        &["group-random"]
    }

    fn custom_protocol(&self, name: &str, test_fraction: f64, seed: u64) -> Option<Protocol> {
        Protocol::group_random_named(name, "group-random", test_fraction, seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_names() {
        assert_eq!(parse_slice_name("100032-3-0-0.wav"), Some((100032, 3)));
        assert_eq!(parse_slice_name("7061-6-0-0.wav"), Some((7061, 6)));
        assert_eq!(parse_slice_name("100032-3-0.wav"), None);
        assert_eq!(parse_slice_name("100032-x-0-0.wav"), None);
        assert_eq!(parse_slice_name("100032-3-0-0.flac"), None);
    }
}
