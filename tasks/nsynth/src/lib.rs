//! NSynth: 305,979 four-second musical notes (16 kHz, 16-bit mono WAV) from 1,006 instruments,
//! classified here by instrument family (11 classes). Layout of the three official archives,
//! unpacked side by side into the data directory (default `data/nsynth`):
//!
//! ```text
//! data/nsynth/nsynth-train/examples.json     289,205 notes
//! data/nsynth/nsynth-train/audio/<note_str>.wav
//! data/nsynth/nsynth-valid/examples.json      12,678 notes
//! data/nsynth/nsynth-valid/audio/<note_str>.wav
//! data/nsynth/nsynth-test/examples.json        4,096 notes
//! data/nsynth/nsynth-test/audio/<note_str>.wav
//! ```
//!
//! `examples.json` is one JSON object keyed by `note_str`; each value has the fields `note`,
//! `note_str`, `instrument`, `instrument_str`, `pitch`, `velocity`, `sample_rate`, `qualities`,
//! `qualities_str`, `instrument_family`, `instrument_family_str`, `instrument_source` and
//! `instrument_source_str` ([`Example`]). It is parsed with serde into typed structs (a
//! `BTreeMap` keyed by `note_str`, so the train file's ~130 MB parse in one linear pass), and
//! each entry's `instrument_family` (int) must agree with its `instrument_family_str` and with
//! [`FAMILIES`] (bass, brass, flute, guitar, keyboard, mallet, organ, reed, string, synth_lead,
//! vocal, in index order); the label is the family index.
//!
//! Items are ordered train, valid, test, each by `note_str`, so each part is a contiguous range
//! of extraction chunks. Each item's group is its `instrument_str`.
//!
//! # Protocol
//!
//! `--split official` (default): train on `nsynth-train`, choose the best epoch on
//! `nsynth-valid`, evaluate on `nsynth-test` (one split). `synth_lead` has training notes but no
//! validation or test notes in the real data: the loader reports every family missing from a
//! part (printed as a note), and `train` finds the same from the split itself: report.md says
//! "synth_lead has no valid or test items" under the results table, and results.json lists it
//! per fold (`protocol.folds[].classes_without_items`). Macro-F1 is scikit-learn's
//! `average="macro"`, over the families in the test labels or predictions: when the probe never
//! predicts synth_lead it is absent (`absent_classes`, `"absent": true` in `per_class`) and left
//! out of the mean rather than averaged in as F1 0; when it does predict it, synth_lead counts
//! with F1 0, as in scikit-learn. `--split random` reproduces the original study's stratified
//! 80/20 split over all notes; `--split group-random` keeps each instrument whole.
//!
//! # Extraction in parts
//!
//! `nsynth extract --part train|valid|test` extracts only the chunks holding that part's items
//! (the original study's three extraction steps); the three parts, run one after another in any
//! order (or on three machines sharing the features folder), assemble the same store as one
//! `nsynth extract`. Extraction streams the audio (a bounded decode queue; finished chunks go to
//! disk), so memory does not grow with the 289,205 training clips; the store's per-item metadata
//! takes about 125 bytes per item (about 38 MB for all 305,979 notes), well under safetensors'
//! 100 MB header limit.
//!
//! # Download
//!
//! `http://download.magenta.tensorflow.org/datasets/nsynth/nsynth-{train,valid,test}.jsonwav.tar.gz`,
//! md5 (as pinned by hear-preprocess) train `fde6665a93865503ba598b9fac388660`, valid
//! `87e94a00a19b6dbc99cf6d4c0c0cae87`, test `5e6f8719bf7e16ad0a00d518b78af77d`. Each unpacks to
//! `nsynth-<part>/` inside the data directory. `download --part P` fetches one part only.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use pipeline::download::{Resource, Unpack};
use pipeline::table::check_files_exist;
use pipeline::{Dataset, Item, Partition, Protocol, Task};
use serde::Deserialize;

/// Where the official archives live.
pub const BASE_URL: &str = "http://download.magenta.tensorflow.org/datasets/nsynth/";

/// The instrument families, in `instrument_family` index order.
pub const FAMILIES: [&str; 11] = [
    "bass",
    "brass",
    "flute",
    "guitar",
    "keyboard",
    "mallet",
    "organ",
    "reed",
    "string",
    "synth_lead",
    "vocal",
];

/// One of the three official parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Part {
    /// `nsynth-train` (289,205 notes).
    Train,
    /// `nsynth-valid` (12,678 notes): best-epoch selection.
    Valid,
    /// `nsynth-test` (4,096 notes).
    Test,
}

impl Part {
    /// All parts, in item order.
    pub const ALL: [Part; 3] = [Part::Train, Part::Valid, Part::Test];

    /// `train`, `valid`, `test`.
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Train => "train",
            Part::Valid => "valid",
            Part::Test => "test",
        }
    }

    /// `nsynth-train`, ...: the folder the part's archive unpacks to.
    pub fn folder(self) -> String {
        format!("nsynth-{}", self.as_str())
    }

    /// The official archive's file name.
    pub fn archive(self) -> String {
        format!("nsynth-{}.jsonwav.tar.gz", self.as_str())
    }

    /// The pinned md5 of the official archive (from hear-preprocess).
    pub fn md5(self) -> &'static str {
        match self {
            Part::Train => "fde6665a93865503ba598b9fac388660",
            Part::Valid => "87e94a00a19b6dbc99cf6d4c0c0cae87",
            Part::Test => "5e6f8719bf7e16ad0a00d518b78af77d",
        }
    }

    /// The partition its items get.
    pub fn partition(self) -> Partition {
        match self {
            Part::Train => Partition::Train,
            Part::Valid => Partition::Valid,
            Part::Test => Partition::Test,
        }
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Task options.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NsynthOptions {
    /// Only this part: `extract` embeds only the chunks holding its notes (run the three parts
    /// in any order; the store is assembled when all are done), `download` fetches only its
    /// archive. Default: all three.
    #[arg(long, value_enum)]
    pub part: Option<Part>,
}

/// One entry of `examples.json`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Example {
    /// Unique note id.
    pub note: u64,
    /// `<instrument_str>-<pitch>-<velocity>`, the audio file's stem and the entry's key.
    pub note_str: String,
    /// Instrument id.
    pub instrument: u64,
    /// `<family>_<source>_<number>`.
    pub instrument_str: String,
    /// MIDI pitch, 0..=127.
    pub pitch: u8,
    /// MIDI velocity, 0..=127.
    pub velocity: u8,
    /// Always 16000 in the official data.
    pub sample_rate: u32,
    /// Ten 0/1 flags (bright, dark, distortion, ...).
    pub qualities: Vec<u8>,
    /// Names of the qualities set.
    pub qualities_str: Vec<String>,
    /// Index into [`FAMILIES`]: the label.
    pub instrument_family: usize,
    /// The family's name.
    pub instrument_family_str: String,
    /// 0 acoustic, 1 electronic, 2 synthetic.
    pub instrument_source: u8,
    /// `acoustic`, `electronic`, `synthetic`.
    pub instrument_source_str: String,
}

/// Parses an `examples.json` text (errors name the entry and field, line and column).
pub fn parse_examples(text: &str) -> Result<BTreeMap<String, Example>, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    let map: BTreeMap<String, Example> =
        serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            if path.is_empty() || path == "." {
                e.into_inner().to_string()
            } else {
                format!("entry {path}: {}", e.into_inner())
            }
        })?;
    de.end().map_err(|e| e.to_string())?;
    Ok(map)
}

/// Reads and checks one part's `examples.json`.
pub fn read_examples(path: &Path, hint: &str) -> Result<BTreeMap<String, Example>> {
    if !path.is_file() {
        bail!("{} not found; {hint}", path.display());
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let examples = parse_examples(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    for (key, ex) in &examples {
        if ex.note_str != *key {
            bail!(
                "{}: entry {key:?} has note_str {:?}",
                path.display(),
                ex.note_str
            );
        }
        if key.is_empty() || key.contains(['/', '\\']) || key.starts_with('.') {
            bail!("{}: entry {key:?} is not a plain file stem", path.display());
        }
        match FAMILIES.get(ex.instrument_family) {
            Some(name) if *name == ex.instrument_family_str => {}
            Some(name) => bail!(
                "{}: entry {key:?}: instrument_family {} is {name:?} but instrument_family_str is {:?}",
                path.display(),
                ex.instrument_family,
                ex.instrument_family_str
            ),
            None => bail!(
                "{}: entry {key:?}: instrument_family {} is not in 0..=10",
                path.display(),
                ex.instrument_family
            ),
        }
    }
    Ok(examples)
}

/// The NSynth task.
#[derive(Debug, Clone)]
pub struct Nsynth {
    options: NsynthOptions,
}

impl Nsynth {
    /// A task with these options.
    pub fn new(options: &NsynthOptions) -> Result<Self> {
        Ok(Self {
            options: options.clone(),
        })
    }

    fn parts(&self) -> Vec<Part> {
        match self.options.part {
            Some(p) => vec![p],
            None => Part::ALL.to_vec(),
        }
    }
}

impl Task for Nsynth {
    fn name(&self) -> String {
        "nsynth".into()
    }

    fn description(&self) -> String {
        "NSynth instrument family classification (11 families, official train/valid/test)".into()
    }

    fn default_data_dir(&self) -> PathBuf {
        PathBuf::from("data/nsynth")
    }

    fn resources(&self) -> Vec<Resource> {
        self.parts()
            .into_iter()
            .map(|p| Resource {
                url: format!("{BASE_URL}{}", p.archive()),
                file_name: p.archive(),
                md5: Some(p.md5().into()),
                size: None,
                unpack: Unpack::TarGz,
            })
            .collect()
    }

    /// The archives unpack to `nsynth-<part>/` inside the data directory itself.
    fn unpack_dir(&self, data_dir: &Path) -> PathBuf {
        data_dir.to_path_buf()
    }

    fn is_present(&self, data_dir: &Path) -> bool {
        self.parts().iter().all(|p| {
            let dir = data_dir.join(p.folder());
            dir.join("examples.json").is_file() && dir.join("audio").is_dir()
        })
    }

    fn load(&self, data_dir: &Path) -> Result<Dataset> {
        let hint = "run `nsynth download` or pass --data-dir (the folder holding nsynth-train/, \
                    nsynth-valid/ and nsynth-test/)";
        let mut items = Vec::new();
        let mut counts = [[0usize; FAMILIES.len()]; 3];
        let mut other_rates = 0usize;
        for (pi, part) in Part::ALL.into_iter().enumerate() {
            let examples =
                read_examples(&data_dir.join(part.folder()).join("examples.json"), hint)?;
            items.reserve(examples.len());
            for (note_str, ex) in examples {
                counts[pi][ex.instrument_family] += 1;
                other_rates += usize::from(ex.sample_rate != 16_000);
                items.push(Item {
                    path: format!("{}/audio/{note_str}.wav", part.folder()),
                    label: ex.instrument_family,
                    split: part.partition(),
                    group: Some(ex.instrument_str),
                    segment: None,
                });
            }
        }
        check_files_exist(data_dir, items.iter().map(|it| it.path.as_str()), hint)?;
        let mut notes = Vec::new();
        for (f, family) in FAMILIES.iter().enumerate() {
            let missing: Vec<&str> = Part::ALL
                .iter()
                .zip(&counts)
                .filter(|(_, c)| c[f] == 0)
                .map(|(p, _)| p.as_str())
                .collect();
            if !missing.is_empty() {
                notes.push(format!(
                    "{family} has no {} examples{}",
                    missing.join(" or "),
                    if missing.contains(&"test") {
                        " (test support 0: left out of macro-F1 unless predicted; see \
                         absent_classes in results.json)"
                    } else {
                        ""
                    }
                ));
            }
        }
        if other_rates > 0 {
            notes.push(format!(
                "{other_rates} notes declare a sample rate other than 16000 (resampled to 16 kHz)"
            ));
        }
        Ok(Dataset {
            root: data_dir.to_path_buf(),
            class_names: FAMILIES.iter().map(|s| s.to_string()).collect(),
            items,
            notes,
        })
    }

    fn official_protocol(&self) -> Protocol {
        Protocol::PredefinedSplit
    }

    fn split_names() -> &'static [&'static str] {
        &["group-random"]
    }

    fn custom_protocol(&self, name: &str, test_fraction: f64, seed: u64) -> Option<Protocol> {
        Protocol::group_random_named(name, "group-random", test_fraction, seed)
    }

    fn extract_only(&self) -> Option<Partition> {
        self.options.part.map(Part::partition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_metadata_per_item_stays_far_under_the_safetensors_header_limit() {
        // The longest real names: synth_lead_synthetic_NNN-PPP-VVV in nsynth-train.
        let item = Item {
            path: "nsynth-train/audio/synth_lead_synthetic_000-108-127.wav".into(),
            label: 9,
            split: Partition::Train,
            group: Some("synth_lead_synthetic_000".into()),
            segment: None,
        };
        let bytes = serde_json::to_string(&item).unwrap().len() + 1; // + separating comma
        assert!(bytes <= 130, "{bytes} bytes per item");
        assert!(305_979 * bytes < 50_000_000, "{bytes} bytes per item");
    }

    #[test]
    fn parse_errors_name_the_entry() {
        let err = parse_examples(r#"{"x-001-100": {"note": "one"}}"#).unwrap_err();
        assert!(err.contains("entry x-001-100.note"), "{err}");
        assert!(err.contains("line 1"), "{err}");
        let err = parse_examples("{\"x\": 1,\n").unwrap_err();
        assert!(err.contains("line"), "{err}");
    }
}
