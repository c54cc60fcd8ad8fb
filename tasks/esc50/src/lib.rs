//! ESC-50: 2,000 five-second environmental recordings in 50 classes, in five predefined folds
//! (clips cut from one Freesound recording share a fold). Layout of the official archive
//! (`ESC-50-master/`):
//!
//! ```text
//! ESC-50-master/meta/esc50.csv   filename,fold,target,category,esc10,src_file,take
//! ESC-50-master/audio/{fold}-{clip_id}-{take}-{target}.wav   44.1 kHz mono
//! ```
//!
//! The default protocol is 5-fold cross-validation over the official folds; `--split random`
//! reproduces the original study's stratified 80/20 split; `--esc10` restricts to the ESC-10
//! subset (10 classes, the `esc10` column).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use pipeline::download::{Expected, Resource, Unpack};
use pipeline::table::{check_files_exist, read_csv, Table};
use pipeline::{Dataset, Item, Partition, Protocol, Task};

/// The official archive (the GitHub repository's master branch).
pub const ARCHIVE_URL: &str = "https://github.com/karoldvl/ESC-50/archive/master.zip";

/// Task options.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Esc50Options {
    /// Use the ESC-10 subset (10 classes) instead of all 50.
    #[arg(long)]
    pub esc10: bool,
}

/// The ESC-50 task.
#[derive(Debug, Clone)]
pub struct Esc50 {
    options: Esc50Options,
}

impl Esc50 {
    /// A task with these options.
    pub fn new(options: &Esc50Options) -> Result<Self> {
        Ok(Self {
            options: options.clone(),
        })
    }
}

/// ESC-50's number of classes: `target` is in `0..NUM_CLASSES`.
pub const NUM_CLASSES: usize = 50;

const COLUMNS: [&str; 7] = [
    "filename", "fold", "target", "category", "esc10", "src_file", "take",
];

impl Task for Esc50 {
    fn name(&self) -> String {
        if self.options.esc10 { "esc10" } else { "esc50" }.into()
    }

    fn description(&self) -> String {
        if self.options.esc10 {
            "ESC-10 environmental sound classification (10 classes)".into()
        } else {
            "ESC-50 environmental sound classification (50 classes)".into()
        }
    }

    fn default_data_dir(&self) -> PathBuf {
        PathBuf::from("data/ESC-50-master")
    }

    fn resources(&self) -> Vec<Resource> {
        vec![Resource {
            url: ARCHIVE_URL.into(),
            file_name: "ESC-50-master.zip".into(),
            // GitHub generates branch archives on demand; they are not byte-stable, so no
            // checksum is pinned (the layout is checked after unpacking instead).
            md5: None,
            size: None,
            unpack: Unpack::Zip,
            dataset: "ESC-50".into(),
            roots: vec!["ESC-50-master".into()],
            // 2,000 five-second 44.1 kHz 16-bit WAVs (about 880 MB); the zip is about 650 MB.
            expected: Expected {
                download_bytes: Some(700_000_000),
                unpacked_bytes: Some(900_000_000),
                entries: Some(2_100),
            },
        }]
    }

    fn is_present(&self, data_dir: &Path) -> bool {
        data_dir.join("meta/esc50.csv").is_file() && data_dir.join("audio").is_dir()
    }

    fn load(&self, data_dir: &Path) -> Result<Dataset> {
        let hint = "run `esc50 download` or pass --data-dir";
        let csv = data_dir.join("meta/esc50.csv");
        let table = read_csv(&csv, &COLUMNS, hint)?;
        if !data_dir.join("audio").is_dir() {
            bail!("{} not found; {hint}", data_dir.join("audio").display());
        }
        let mut rows = Vec::new();
        let mut names: BTreeMap<usize, String> = BTreeMap::new();
        for (line, row) in &table.rows {
            let target: usize = Table::parse(&csv, *line, row, "target")?;
            // Checked before it sizes the class list below.
            if target >= NUM_CLASSES {
                bail!(
                    "{}: line {line}: target {target} is not in 0..{NUM_CLASSES} (ESC-50 has \
                     {NUM_CLASSES} classes)",
                    csv.display()
                );
            }
            let fold: u32 = Table::parse(&csv, *line, row, "fold")?;
            if !(1..=5).contains(&fold) {
                bail!(
                    "{}: line {line}: fold {fold} is not in 1..=5",
                    csv.display()
                );
            }
            let esc10 = match row["esc10"].to_ascii_lowercase().as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                other => bail!(
                    "{}: line {line}: esc10 is {other:?}, expected True/False",
                    csv.display()
                ),
            };
            let category = row["category"].clone();
            if let Some(prev) = names.insert(target, category.clone()) {
                if prev != category {
                    bail!(
                        "{}: line {line}: target {target} is {category:?} here but {prev:?} above",
                        csv.display()
                    );
                }
            }
            if self.options.esc10 && !esc10 {
                continue;
            }
            rows.push((
                row["filename"].clone(),
                target,
                fold,
                row["src_file"].clone(),
            ));
        }
        if rows.is_empty() {
            bail!("{}: no clips listed", csv.display());
        }
        // Labels are the dataset's targets; for ESC-10 the used targets renumbered in order.
        let used: Vec<usize> = if self.options.esc10 {
            let mut t: Vec<usize> = rows.iter().map(|r| r.1).collect();
            t.sort_unstable();
            t.dedup();
            t
        } else {
            let max = *names.keys().max().expect("rows is not empty");
            (0..=max).collect()
        };
        let class_names: Vec<String> = used
            .iter()
            .map(|t| names.get(t).cloned().unwrap_or_else(|| format!("class{t}")))
            .collect();
        let items: Vec<Item> = rows
            .into_iter()
            .map(|(filename, target, fold, src)| Item {
                path: format!("audio/{filename}"),
                label: used.binary_search(&target).expect("target collected above"),
                split: Partition::Fold(fold),
                group: Some(src),
                segment: None,
            })
            .collect();
        check_files_exist(data_dir, items.iter().map(|it| it.path.as_str()), hint)?;
        Ok(Dataset::new(data_dir, class_names, items, vec![]))
    }

    fn official_protocol(&self) -> Protocol {
        Protocol::PredefinedFolds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ESC-50 layout with the given CSV rows (after the header) and empty audio files for
    /// `files`.
    fn layout(rows: &[&str], files: &[&str]) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("ESC-50-master");
        std::fs::create_dir_all(root.join("meta")).unwrap();
        std::fs::create_dir_all(root.join("audio")).unwrap();
        let mut csv = String::from("filename,fold,target,category,esc10,src_file,take\n");
        for row in rows {
            csv.push_str(row);
            csv.push('\n');
        }
        std::fs::write(root.join("meta/esc50.csv"), csv).unwrap();
        for f in files {
            let path = root.join(f);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"RIFF").unwrap();
        }
        tmp
    }

    fn task() -> Esc50 {
        Esc50::new(&Esc50Options::default()).unwrap()
    }

    #[test]
    fn a_huge_target_is_an_error_not_an_allocation() {
        let tmp = layout(
            &["1-1-A-0.wav,1,10000000000,dog,True,1,A"],
            &["audio/1-1-A-0.wav"],
        );
        let err = task()
            .load(&tmp.path().join("ESC-50-master"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("esc50.csv")
                && err.contains("line 2")
                && err.contains("target 10000000000 is not in 0..50"),
            "{err}"
        );
        // The largest valid target is fine.
        let tmp = layout(&["1-1-A-49.wav,1,49,x,False,1,A"], &["audio/1-1-A-49.wav"]);
        let d = task().load(&tmp.path().join("ESC-50-master")).unwrap();
        assert_eq!(d.class_names.len(), 50);
    }

    #[test]
    fn a_path_outside_the_data_folder_is_refused() {
        // `audio/../../outside.wav` exists (outside ESC-50-master), but is refused.
        let tmp = layout(&["../../outside.wav,1,0,dog,True,1,A"], &[]);
        std::fs::write(tmp.path().join("outside.wav"), b"RIFF").unwrap();
        let err = task()
            .load_checked(&tmp.path().join("ESC-50-master"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("audio/../../outside.wav") && err.contains("inside the data folder"),
            "{err}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_data_folder_that_is_a_symlink_keeps_working() {
        let tmp = layout(&["1-1-A-0.wav,1,0,dog,True,1,A"], &["audio/1-1-A-0.wav"]);
        let link = tmp.path().join("esc50-link");
        std::os::unix::fs::symlink(tmp.path().join("ESC-50-master"), &link).unwrap();
        let d = task().load_checked(&link).unwrap();
        assert_eq!(d.items.len(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_in_the_dataset_is_refused() {
        let tmp = layout(&["1-1-A-0.wav,1,0,dog,True,1,A"], &[]);
        let fifo = tmp.path().join("ESC-50-master/audio/1-1-A-0.wav");
        let ok = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let err = task()
            .load(&tmp.path().join("ESC-50-master"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("1-1-A-0.wav") && err.contains("a FIFO"),
            "{err}"
        );
    }
}
