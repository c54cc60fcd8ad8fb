//! LibriSpeech train-clean-100 speaker identification: 28,539 read-speech utterances (16 kHz
//! FLAC, up to about 35 s) by 251 speakers; the class of an utterance is its speaker.
//!
//! # Layout
//!
//! The official archive `train-clean-100.tar.gz` unpacks into `LibriSpeech/` (the default
//! `--data-dir` is `data/LibriSpeech`):
//!
//! ```text
//! LibriSpeech/SPEAKERS.TXT
//!     ; comment lines start with ';'
//!     ;ID  |SEX| SUBSET           |MINUTES| NAME
//!     19   | F | train-clean-100  | 25.19 | Kara Shallenberg
//!     60   | M | train-clean-100  | 20.18 | |CBW|Simon
//! LibriSpeech/train-clean-100/{speaker}/{chapter}/{speaker}-{chapter}.trans.txt
//!     {speaker}-{chapter}-{utt:04} TRANSCRIPT IN CAPITALS
//! LibriSpeech/train-clean-100/{speaker}/{chapter}/{speaker}-{chapter}-{utt:04}.flac
//! ```
//!
//! `SPEAKERS.TXT` data lines are pipe-separated with padding spaces; the name is everything after
//! the fourth `|` (one real name, speaker 60's `|CBW|Simon`, contains pipes itself). Utterances
//! are the lines of the `trans.txt` files (each must have its `.flac`); `.flac` files that no
//! transcript lists are left out and counted in a note.
//!
//! # Labels
//!
//! Classes are the speakers present under `train-clean-100/`, sorted numerically; a class name
//! is the speaker ID (e.g. `19`). The sex column of `SPEAKERS.TXT` is summarised in the notes.
//! `SPEAKERS.TXT`'s SUBSET column is cross-checked: speakers on disk that it lists under another
//! subset (or not at all), and speakers it lists under `train-clean-100` that are not on disk,
//! are reported as notes (in the extraction log and report), not errors.
//!
//! # Protocol
//!
//! LibriSpeech defines no speaker-identification split. The default (`--split official`) is the
//! usual one: per speaker, a seeded stratified 80/20 split of the utterances
//! ([`Protocol::Random`] with test fraction [`OFFICIAL_TEST_FRACTION`] and seed
//! [`OFFICIAL_SEED`], fixed so results are comparable across runs). `--split random` is the same
//! split with `--test-fraction` and `--seed`. `--split chapter` keeps chapters (recording
//! sessions) disjoint within each speaker ([`Protocol::GroupRandom`], group
//! `{speaker}-{chapter}`): harder, since session acoustics cannot help. Validation parts
//! (`--val-fraction`) are grouped by chapter too.
//!
//! # Long utterances
//!
//! Utterances run up to about 35 s (560,000 samples). Extraction batches only clips of exactly
//! equal length (no padding, so results are exact) and caps a batch at `--extract-batch-size` ×
//! 30 s of audio (3.84 M samples at the default 8): a 35 s utterance shares a batch only with
//! utterances of exactly its sample count, at most six of them (210 s), so attention memory stays
//! within the same bound as eight 30 s clips. LibriSpeech lengths practically never coincide to
//! the sample, so a long utterance is in practice embedded alone; `--extract-batch-size 1`
//! guarantees it.
//!
//! # Download
//!
//! `https://www.openslr.org/resources/12/train-clean-100.tar.gz` (6.3 GB), md5
//! `2a93770f6d5c6c964bc36631d331a522`, the value OpenSLR publishes and several public loaders pin
//! (no hash is published beside the dataset's own page); it is checked after download. The size is not pinned.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use pipeline::download::{Resource, Unpack};
use pipeline::table::check_files_exist;
use pipeline::{Dataset, Item, Partition, Protocol, Task};

/// The official archive.
pub const ARCHIVE_URL: &str = "https://www.openslr.org/resources/12/train-clean-100.tar.gz";
/// md5 of the official archive (OpenSLR's published list).
pub const ARCHIVE_MD5: &str = "2a93770f6d5c6c964bc36631d331a522";
/// The subset this task uses.
pub const SUBSET: &str = "train-clean-100";
/// Test fraction of the default protocol.
pub const OFFICIAL_TEST_FRACTION: f64 = 0.2;
/// Seed of the default protocol.
pub const OFFICIAL_SEED: u64 = 42;

const HINT: &str = "run `librispeech download` or pass --data-dir";

/// Task options (none yet: the split is chosen with `--split official|random|chapter`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LibriSpeechOptions {}

/// The LibriSpeech train-clean-100 speaker-identification task.
#[derive(Debug, Clone)]
pub struct LibriSpeech {
    _options: LibriSpeechOptions,
}

impl LibriSpeech {
    /// A task with these options.
    pub fn new(options: &LibriSpeechOptions) -> Result<Self> {
        Ok(Self {
            _options: options.clone(),
        })
    }
}

/// One data line of `SPEAKERS.TXT`.
#[derive(Debug, Clone, PartialEq)]
pub struct Speaker {
    /// Speaker ID.
    pub id: u32,
    /// `M` or `F`.
    pub sex: String,
    /// The subset the speaker belongs to (`train-clean-100`, `dev-clean`, ...).
    pub subset: String,
    /// Minutes of speech.
    pub minutes: f64,
    /// Reader name (may contain spaces and pipes).
    pub name: String,
}

/// Parses `SPEAKERS.TXT`: `;` comment lines and blank lines are skipped, data lines are
/// `ID|SEX|SUBSET|MINUTES|NAME` with padding spaces. Errors name the file and the line.
pub fn read_speakers(path: &Path) -> Result<BTreeMap<u32, Speaker>> {
    if !path.is_file() {
        bail!("{} not found; {HINT}", path.display());
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let mut out = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim_start_matches('\u{feff}').trim();
        if line.is_empty() || line.starts_with(';') {
            continue;
        }
        let fields: Vec<&str> = line.splitn(5, '|').map(str::trim).collect();
        let bad = |what: &str| {
            anyhow::anyhow!(
                "{}: line {line_no}: {what} (expected ID|SEX|SUBSET|MINUTES|NAME), found {line:?}",
                path.display()
            )
        };
        if fields.len() != 5 {
            return Err(bad("not five pipe-separated fields"));
        }
        let id: u32 = fields[0]
            .parse()
            .map_err(|_| bad("the ID is not a number"))?;
        let sex = fields[1].to_ascii_uppercase();
        if sex != "M" && sex != "F" {
            return Err(bad("SEX is not M or F"));
        }
        let minutes: f64 = fields[3]
            .parse()
            .map_err(|_| bad("MINUTES is not a number"))?;
        let speaker = Speaker {
            id,
            sex,
            subset: fields[2].to_string(),
            minutes,
            name: fields[4].to_string(),
        };
        if out.insert(id, speaker).is_some() {
            bail!(
                "{}: line {line_no}: speaker {id} listed twice",
                path.display()
            );
        }
    }
    if out.is_empty() {
        bail!("{}: no speaker lines", path.display());
    }
    Ok(out)
}

/// Sorted numeric subfolders of `dir` (hidden entries and plain files ignored); a non-numeric
/// folder is an error naming it.
fn numeric_dirs(dir: &Path, what: &str) -> Result<Vec<(u32, PathBuf)>> {
    let mut out = Vec::new();
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with('.') || !path.is_dir() {
            continue;
        }
        match name.parse::<u32>() {
            Ok(n) if name.bytes().all(|b| b.is_ascii_digit()) => out.push((n, path)),
            _ => bail!(
                "{}: expected {what} folders named by number, found {name:?}",
                dir.display()
            ),
        }
    }
    out.sort();
    Ok(out)
}

/// The utterance IDs listed in `{speaker}-{chapter}.trans.txt`, checked against the folder.
fn read_transcript(path: &Path, speaker: u32, chapter: u32) -> Result<Vec<String>> {
    if !path.is_file() {
        bail!("{} not found; {HINT}", path.display());
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let prefix = format!("{speaker}-{chapter}-");
    let mut ids = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_start_matches('\u{feff}').trim();
        if line.is_empty() {
            continue;
        }
        let id = line.split_whitespace().next().unwrap_or_default();
        let utt = id.strip_prefix(&prefix).unwrap_or("");
        if utt.is_empty() || !utt.bytes().all(|b| b.is_ascii_digit()) {
            bail!(
                "{}: line {}: expected `{prefix}NNNN TRANSCRIPT`, found {line:?}",
                path.display(),
                i + 1
            );
        }
        ids.push(id.to_string());
    }
    Ok(ids)
}

impl Task for LibriSpeech {
    fn name(&self) -> String {
        "librispeech".into()
    }

    fn description(&self) -> String {
        "LibriSpeech train-clean-100 speaker identification".into()
    }

    fn default_data_dir(&self) -> PathBuf {
        PathBuf::from("data/LibriSpeech")
    }

    fn resources(&self) -> Vec<Resource> {
        vec![Resource {
            url: ARCHIVE_URL.into(),
            file_name: "train-clean-100.tar.gz".into(),
            md5: Some(ARCHIVE_MD5.into()),
            // The size (6,387,309,499 bytes) comes from a single public source: not pinned.
            size: None,
            unpack: Unpack::TarGz,
        }]
    }

    fn is_present(&self, data_dir: &Path) -> bool {
        data_dir.join("SPEAKERS.TXT").is_file() && data_dir.join(SUBSET).is_dir()
    }

    fn load(&self, data_dir: &Path) -> Result<Dataset> {
        let speakers_path = data_dir.join("SPEAKERS.TXT");
        let speakers = read_speakers(&speakers_path)?;
        let subset_dir = data_dir.join(SUBSET);
        if !subset_dir.is_dir() {
            bail!("{} not found; {HINT}", subset_dir.display());
        }
        let mut class_names = Vec::new();
        let mut items = Vec::new();
        let mut unlisted: Vec<String> = Vec::new();
        let mut chapters = 0usize;
        let mut notes = Vec::new();
        let (mut other_subset, mut unknown) = (Vec::new(), Vec::new());
        let mut sexes: BTreeMap<String, usize> = BTreeMap::new();
        for (speaker, speaker_dir) in numeric_dirs(&subset_dir, "speaker")? {
            let label = class_names.len();
            let before = items.len();
            for (chapter, chapter_dir) in numeric_dirs(&speaker_dir, "chapter")? {
                let trans = chapter_dir.join(format!("{speaker}-{chapter}.trans.txt"));
                let ids = read_transcript(&trans, speaker, chapter)?;
                let listed: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
                if let Ok(entries) = std::fs::read_dir(&chapter_dir) {
                    for e in entries.flatten() {
                        let name = e.file_name().to_string_lossy().into_owned();
                        if let Some(stem) = name.strip_suffix(".flac") {
                            if !listed.contains(stem) {
                                unlisted.push(format!("{SUBSET}/{speaker}/{chapter}/{name}"));
                            }
                        }
                    }
                }
                if !ids.is_empty() {
                    chapters += 1;
                }
                for id in ids {
                    items.push(Item {
                        path: format!("{SUBSET}/{speaker}/{chapter}/{id}.flac"),
                        label,
                        split: Partition::None,
                        group: Some(format!("{speaker}-{chapter}")),
                        segment: None,
                    });
                }
            }
            if items.len() == before {
                continue;
            }
            class_names.push(speaker.to_string());
            match speakers.get(&speaker) {
                Some(s) => {
                    *sexes.entry(s.sex.clone()).or_default() += 1;
                    if s.subset != SUBSET {
                        other_subset.push(format!("{speaker} ({})", s.subset));
                    }
                }
                None => unknown.push(speaker.to_string()),
            }
        }
        if items.is_empty() {
            bail!(
                "{}: no utterances found (expected {{speaker}}/{{chapter}}/{{speaker}}-{{chapter}}.trans.txt); {HINT}",
                subset_dir.display()
            );
        }
        check_files_exist(data_dir, items.iter().map(|it| it.path.as_str()), HINT)?;
        let sex_summary: Vec<String> = sexes.iter().map(|(s, n)| format!("{n} {s}")).collect();
        notes.push(format!(
            "{SUBSET}: {} speakers ({}), {} chapters, {} utterances",
            class_names.len(),
            sex_summary.join(", "),
            chapters,
            items.len()
        ));
        if !other_subset.is_empty() {
            notes.push(format!(
                "SPEAKERS.TXT lists {} speaker(s) found under {SUBSET}/ in another subset: {}",
                other_subset.len(),
                other_subset.join(", ")
            ));
        }
        if !unknown.is_empty() {
            notes.push(format!(
                "{} speaker(s) under {SUBSET}/ are not in SPEAKERS.TXT: {}",
                unknown.len(),
                unknown.join(", ")
            ));
        }
        let absent: Vec<String> = speakers
            .values()
            .filter(|s| s.subset == SUBSET && !class_names.contains(&s.id.to_string()))
            .map(|s| s.id.to_string())
            .collect();
        if !absent.is_empty() {
            notes.push(format!(
                "SPEAKERS.TXT lists {} {SUBSET} speaker(s) with no utterances on disk: {}",
                absent.len(),
                absent.join(", ")
            ));
        }
        if !unlisted.is_empty() {
            unlisted.sort();
            notes.push(format!(
                "{} .flac file(s) not listed in any trans.txt were left out, e.g. {}",
                unlisted.len(),
                unlisted[0]
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
        Protocol::Random {
            test_fraction: OFFICIAL_TEST_FRACTION,
            seed: OFFICIAL_SEED,
        }
    }

    fn split_names() -> &'static [&'static str] {
        &["chapter"]
    }

    fn custom_protocol(&self, name: &str, test_fraction: f64, seed: u64) -> Option<Protocol> {
        Protocol::group_random_named(name, "chapter", test_fraction, seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speakers_txt_with_pipes_in_names_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("SPEAKERS.TXT");
        std::fs::write(
            &p,
            "; comment\r\n;ID  |SEX| SUBSET           |MINUTES| NAME\r\n\
             60   | M | train-clean-100  | 20.18 | |CBW|Simon\r\n\
             14   | F | train-clean-360  | 25.03 | Kristin LeMoine\r\n",
        )
        .unwrap();
        let s = read_speakers(&p).unwrap();
        assert_eq!(s[&60].name, "|CBW|Simon");
        assert_eq!(s[&60].subset, "train-clean-100");
        assert_eq!(s[&14].sex, "F");
        assert!((s[&14].minutes - 25.03).abs() < 1e-9);
        std::fs::write(&p, ";x\n60 | X | train-clean-100 | 1.0 | A\n").unwrap();
        let e = read_speakers(&p).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("SEX"), "{e}");
        std::fs::write(&p, "60 | M | train-clean-100\n").unwrap();
        let e = read_speakers(&p).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("five"), "{e}");
    }
}
