//! ICBHI 2017 respiratory sounds: 920 auscultation recordings from 126 patients, with every
//! respiratory cycle annotated for crackles and wheezes, a diagnosis per patient, and the
//! challenge's official train/test split.
//!
//! # Layout
//!
//! `--data-dir` (default `data/icbhi`) holds:
//!
//! ```text
//! ICBHI_final_database/{patient}_{recIdx}_{chest}_{mode}_{device}.wav
//! ICBHI_final_database/{patient}_{recIdx}_{chest}_{mode}_{device}.txt
//! ICBHI_challenge_train_test.txt     name<TAB>train|test, one recording per line (CRLF)
//! ICBHI_Challenge_diagnosis.txt      pid<TAB>diagnosis (COPD, Healthy, URTI, ...)
//! ```
//!
//! - File names: patient `101`-`226`, recording index (`1b1`, `2b3`, ...), chest location
//!   `Tc|Al|Ar|Pl|Pr|Ll|Lr`, acquisition mode `sc|mc`, device
//!   `AKGC417L|LittC2SE|Litt3200|Meditron`.
//! - Audio comes at 4 kHz, 10 kHz and 44.1 kHz, 16- or 24-bit PCM. The pipeline resamples every
//!   file to 16 kHz mono.
//! - Each `.txt` lists the recording's respiratory cycles, one per line:
//!   `start<TAB>end<TAB>crackles(0|1)<TAB>wheezes(0|1)`, times in seconds. Any whitespace
//!   separates fields; CRLF and blank lines are accepted.
//!
//! # Split file quirks
//!
//! Public copies of the split file disagree: one has 920 lines, another 921. The 921-line copy
//! lists `226_1b1_Pl_sc` under both `Meditron` and `LittC2SE`, a leftover of a file rename.
//!
//! - A name listed twice with the same split is accepted and reported in the dataset notes.
//! - A name listed with two different splits is an error.
//! - A listed recording that is not on disk is left out and reported.
//! - A recording on disk that the split file does not list is left out and reported.
//!
//! All of these appear as `note:` lines on stderr when `extract`/`run` loads the dataset.
//!
//! # Labels (`--labels`, `--labels-csv`, `--level`)
//!
//! - Default: recording-level `normal` / `abnormal`. A recording is abnormal when any of its
//!   cycles has a crackle or a wheeze. One item per recording.
//! - `--labels diagnosis`: recording-level `healthy` / `unhealthy`, from the patient's diagnosis
//!   (`Healthy` vs every other diagnosis). The store is named `icbhi_diagnosis`.
//! - `--labels-csv FILE`: recording-level labels read from an external CSV with a header and
//!   the columns `file,label`, such as the original study's `result.csv`. `file` is a recording
//!   name with or without `.wav`. The label values are class names. **Classes are sorted by
//!   name** (byte order), as scikit-learn's `LabelEncoder` orders them. Recordings the CSV does
//!   not list are left out and reported. The store is named `icbhi_labels`.
//! - `--level cycle`: cycle-level `normal` / `crackle` / `wheeze` / `both`, the challenge's
//!   four-class task. Each annotated cycle is one item, with `segment = (start, end)`. The
//!   recording is decoded once and the pipeline cuts every cycle from it. The store is named
//!   `icbhi_cycle`. This level uses the annotations, so it cannot be combined with
//!   `--labels diagnosis` or `--labels-csv`.
//!
//! Every item's group is its patient id. Group-aware splits and validation sets keep a
//! patient's recordings and cycles together.
//!
//! # Protocols (`--split`)
//!
//! - `official` (default): the challenge's train/test split from
//!   `ICBHI_challenge_train_test.txt` (`Protocol::PredefinedSplit`). About 60/40, with no
//!   validation part. This split is **not patient-disjoint**: in the real file, patients 156 and
//!   218 have recordings in both parts. Loading finds every such patient and names it in the
//!   dataset notes.
//! - `patient`: a strictly patient-disjoint split (`Protocol::GroupRandom`, group = patient id).
//!   Patients move to the test part whole, in a seeded shuffle (`--seed`), until about
//!   `--test-fraction` of each class is there (default 0.2). Stratification uses the class of
//!   each patient's first item in item order (items are sorted by recording name), and each
//!   class keeps at least one patient in training.
//! - `random`: the original study's stratified random 80/20 split of items. It ignores patients,
//!   so the same patient can land on both sides.
//!
//! # Metrics
//!
//! `results.json` has accuracy, macro-F1 and confusion matrices for every label set. It also
//! has `task_metrics`, computed with [`metrics::IcbhiScore`] and `Matching::Exact`, as the
//! challenge defines them:
//!
//! - sensitivity `Se` = correctly classified abnormal items / all abnormal items;
//! - specificity `Sp` = correctly classified normal items / all normal items;
//! - score = (Se + Sp) / 2.
//!
//! The negative class is `normal`, or `healthy` for diagnosis labels; every other class is
//! positive. At cycle level the positives are crackle, wheeze and both, and an abnormal cycle
//! counts as correct only when its exact class is predicted. The `grouped` entry gives the
//! binary view (any abnormal class counts as detected).
//!
//! # Download
//!
//! The official host is often down. The files, all at
//! `https://bhichallenge.med.auth.gr/sites/default/files/ICBHI_final_database/`:
//!
//! - `ICBHI_final_database.zip` (about 2 GB). It unpacks into `--data-dir` and holds
//!   `ICBHI_final_database/`.
//! - `ICBHI_challenge_train_test.txt`.
//! - `ICBHI_Challenge_diagnosis.txt`. Third-party READMEs link it at this host path.
//!
//! No checksum is pinned. Third-party repositories give the zip as 1,978,998,275 bytes with md5
//! `f6a5d0ea40bbcd25e17754f9d5ddae48`, but no official figure exists. A wrong pin would set
//! aside a correct 2 GB download as `.bad`, from a host that is often unreachable. The layout is
//! checked after unpacking instead; compare the md5 by hand if you want. The two text files
//! have no published checksums.
//!
//! `download` copies the text files into `--data-dir` ([`Task::after_fetch`]). When a download
//! fails, the error names each file to fetch by hand and where to put it
//! ([`Task::manual_download`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use metrics::{IcbhiScore, Matching};
use pipeline::download::{Resource, Unpack};
use pipeline::table::read_csv;
use pipeline::{Dataset, Item, Partition, Protocol, Task};

/// The official host's folder holding the archive and the text files.
pub const BASE_URL: &str =
    "https://bhichallenge.med.auth.gr/sites/default/files/ICBHI_final_database";
/// The recordings and cycle annotations (unpacks to [`AUDIO_DIR`]).
pub const ARCHIVE_NAME: &str = "ICBHI_final_database.zip";
/// The folder of `.wav` + `.txt` files inside `--data-dir`.
pub const AUDIO_DIR: &str = "ICBHI_final_database";
/// The official train/test split file inside `--data-dir`.
pub const SPLIT_FILE: &str = "ICBHI_challenge_train_test.txt";
/// The per-patient diagnosis file inside `--data-dir`.
pub const DIAGNOSIS_FILE: &str = "ICBHI_Challenge_diagnosis.txt";
/// Chest locations allowed in file names.
pub const CHEST_LOCATIONS: [&str; 7] = ["Tc", "Al", "Ar", "Pl", "Pr", "Ll", "Lr"];
/// Acquisition modes: single channel, multi channel.
pub const MODES: [&str; 2] = ["sc", "mc"];
/// Recording devices.
pub const DEVICES: [&str; 4] = ["AKGC417L", "LittC2SE", "Litt3200", "Meditron"];
/// Cycle-level classes, indexed by `crackle + 2 * wheeze`.
pub const CYCLE_CLASSES: [&str; 4] = ["normal", "crackle", "wheeze", "both"];

const HINT: &str = "run `icbhi download` or pass --data-dir";

/// What one item is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Level {
    /// One item per recording.
    #[default]
    Recording,
    /// One item per annotated respiratory cycle (normal / crackle / wheeze / both).
    Cycle,
}

/// Where recording-level labels come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LabelSource {
    /// normal / abnormal from the cycle annotations (abnormal = any crackle or wheeze).
    #[default]
    Annotations,
    /// healthy / unhealthy from the patient's diagnosis (Healthy vs the rest).
    Diagnosis,
}

/// Task options.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct IcbhiOptions {
    /// `recording` (normal/abnormal per recording) or `cycle` (normal/crackle/wheeze/both per
    /// respiratory cycle).
    #[arg(long, value_enum, default_value = "recording")]
    pub level: Level,
    /// Recording-level labels: `annotations` (normal/abnormal) or `diagnosis` (healthy vs not).
    #[arg(long, value_enum, default_value = "annotations")]
    pub labels: LabelSource,
    /// Recording-level labels from a CSV with columns `file,label` (e.g. the original study's
    /// result.csv); classes are the label values in sorted order.
    #[arg(long, value_name = "FILE")]
    pub labels_csv: Option<PathBuf>,
}

/// The ICBHI 2017 task.
#[derive(Debug, Clone)]
pub struct Icbhi {
    options: IcbhiOptions,
}

impl Icbhi {
    /// A task with these options; combinations that make no sense are errors.
    pub fn new(options: &IcbhiOptions) -> Result<Self> {
        if options.level == Level::Cycle {
            if options.labels == LabelSource::Diagnosis {
                bail!("--level cycle labels cycles from their annotations; --labels diagnosis is recording-level only");
            }
            if options.labels_csv.is_some() {
                bail!("--level cycle labels cycles from their annotations; --labels-csv is recording-level only");
            }
        }
        if options.labels_csv.is_some() && options.labels == LabelSource::Diagnosis {
            bail!("pass either --labels diagnosis or --labels-csv, not both");
        }
        Ok(Self {
            options: options.clone(),
        })
    }
}

/// The parts of a recording's name, e.g. `101_1b1_Al_sc_Meditron`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingName {
    /// Patient id (101-226 in the release).
    pub patient: u32,
    /// Recording index, e.g. `1b1`.
    pub index: String,
    /// Chest location, one of [`CHEST_LOCATIONS`].
    pub chest: String,
    /// `sc` or `mc`.
    pub mode: String,
    /// One of [`DEVICES`].
    pub device: String,
}

impl RecordingName {
    /// Parses a recording name (without extension); the error says which part is wrong.
    pub fn parse(name: &str) -> std::result::Result<Self, String> {
        let parts: Vec<&str> = name.split('_').collect();
        let [patient, index, chest, mode, device] = parts[..] else {
            return Err(format!(
                "{name:?} is not a recording name \
                 ({{patient}}_{{recIdx}}_{{chest}}_{{sc|mc}}_{{device}})"
            ));
        };
        let patient: u32 = patient
            .parse()
            .map_err(|_| format!("{name:?}: patient {patient:?} is not a number"))?;
        if index.is_empty() {
            return Err(format!("{name:?}: empty recording index"));
        }
        if !CHEST_LOCATIONS.contains(&chest) {
            return Err(format!(
                "{name:?}: chest location {chest:?} is not one of {}",
                CHEST_LOCATIONS.join("|")
            ));
        }
        if !MODES.contains(&mode) {
            return Err(format!("{name:?}: mode {mode:?} is not sc or mc"));
        }
        if !DEVICES.contains(&device) {
            return Err(format!(
                "{name:?}: device {device:?} is not one of {}",
                DEVICES.join("|")
            ));
        }
        Ok(Self {
            patient,
            index: index.into(),
            chest: chest.into(),
            mode: mode.into(),
            device: device.into(),
        })
    }
}

/// One annotated respiratory cycle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cycle {
    /// Start, seconds.
    pub start: f64,
    /// End, seconds.
    pub end: f64,
    /// Crackles present.
    pub crackles: bool,
    /// Wheezes present.
    pub wheezes: bool,
}

impl Cycle {
    /// Index into [`CYCLE_CLASSES`].
    pub fn class(&self) -> usize {
        usize::from(self.crackles) + 2 * usize::from(self.wheezes)
    }
}

fn read_text(path: &Path, hint: &str) -> Result<String> {
    if !path.is_file() {
        bail!("{} not found; {hint}", path.display());
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| anyhow::anyhow!("{}: not UTF-8 text ({e})", path.display()))?;
    Ok(text.trim_start_matches('\u{feff}').to_string())
}

/// Non-blank lines (1-based numbers) split on whitespace; CRLF and comment lines (`#`) are
/// tolerated.
fn fields(text: &str) -> impl Iterator<Item = (usize, Vec<&str>)> {
    text.lines().enumerate().filter_map(|(i, line)| {
        let line = line.trim();
        (!line.is_empty() && !line.starts_with('#'))
            .then(|| (i + 1, line.split_whitespace().collect()))
    })
}

/// Parses a cycle annotation file: `start end crackles wheezes` per line.
pub fn parse_cycles(path: &Path, text: &str) -> Result<Vec<Cycle>> {
    let mut cycles = Vec::new();
    for (line, f) in fields(text) {
        let bad = |what: String| {
            anyhow::anyhow!(
                "{}: line {line}: {what} (expected `start<TAB>end<TAB>crackles(0|1)<TAB>wheezes(0|1)`)",
                path.display()
            )
        };
        let [start, end, crackles, wheezes] = f[..] else {
            return Err(bad(format!("{} fields", f.len())));
        };
        let time = |s: &str, what: &str| -> Result<f64> {
            s.parse::<f64>()
                .ok()
                .filter(|t| t.is_finite() && *t >= 0.0)
                .ok_or_else(|| bad(format!("{what} {s:?} is not a time in seconds")))
        };
        let flag = |s: &str, what: &str| -> Result<bool> {
            match s {
                "0" => Ok(false),
                "1" => Ok(true),
                other => Err(bad(format!("{what} flag {other:?} is not 0 or 1"))),
            }
        };
        let cycle = Cycle {
            start: time(start, "start")?,
            end: time(end, "end")?,
            crackles: flag(crackles, "crackles")?,
            wheezes: flag(wheezes, "wheezes")?,
        };
        if cycle.end <= cycle.start {
            return Err(bad(format!("end {end} is not after start {start}")));
        }
        cycles.push(cycle);
    }
    Ok(cycles)
}

/// The official split file, parsed: recording name -> partition, plus what was odd about it.
#[derive(Debug, Clone, Default)]
pub struct SplitFile {
    /// Each listed name once, in file order, with its partition.
    pub entries: Vec<(String, Partition)>,
    /// Names listed more than once (with the same split): `(name, first line, repeated line)`.
    pub duplicates: Vec<(String, usize, usize)>,
}

/// Parses `ICBHI_challenge_train_test.txt`: `name<TAB>train|test` per line (CRLF, blank lines,
/// `.wav` suffixes tolerated).
pub fn parse_split_file(path: &Path, text: &str) -> Result<SplitFile> {
    let mut out = SplitFile::default();
    let mut seen: HashMap<String, (Partition, usize)> = HashMap::new();
    for (line, f) in fields(text) {
        let [name, split] = f[..] else {
            bail!(
                "{}: line {line}: expected `name<TAB>train|test`, found {} fields",
                path.display(),
                f.len()
            );
        };
        let name = name.strip_suffix(".wav").unwrap_or(name);
        RecordingName::parse(name)
            .map_err(|e| anyhow::anyhow!("{}: line {line}: {e}", path.display()))?;
        let partition = match split.to_ascii_lowercase().as_str() {
            "train" => Partition::Train,
            "test" => Partition::Test,
            other => bail!(
                "{}: line {line}: split {other:?} is not train or test",
                path.display()
            ),
        };
        match seen.get(name) {
            Some(&(p, first)) if p == partition => {
                out.duplicates.push((name.to_string(), first, line));
            }
            Some(&(p, first)) => bail!(
                "{}: line {line}: {name} is listed as {partition} here but as {p} on line {first}",
                path.display()
            ),
            None => {
                seen.insert(name.to_string(), (partition, line));
                out.entries.push((name.to_string(), partition));
            }
        }
    }
    if out.entries.is_empty() {
        bail!("{}: no recording listed", path.display());
    }
    Ok(out)
}

/// Parses `ICBHI_Challenge_diagnosis.txt`: `pid<TAB>diagnosis` per line.
pub fn parse_diagnosis(path: &Path, text: &str) -> Result<BTreeMap<u32, String>> {
    let mut out = BTreeMap::new();
    for (line, f) in fields(text) {
        let [pid, diagnosis] = f[..] else {
            bail!(
                "{}: line {line}: expected `pid<TAB>diagnosis`, found {} fields",
                path.display(),
                f.len()
            );
        };
        let pid: u32 = pid.parse().map_err(|_| {
            anyhow::anyhow!(
                "{}: line {line}: patient id {pid:?} is not a number",
                path.display()
            )
        })?;
        if let Some(prev) = out.insert(pid, diagnosis.to_string()) {
            if prev != diagnosis {
                bail!(
                    "{}: line {line}: patient {pid} is {diagnosis:?} here but {prev:?} above",
                    path.display()
                );
            }
        }
    }
    Ok(out)
}

/// Lists names (without extension) in the recordings folder: `.wav` stems.
fn recordings_on_disk(audio_dir: &Path) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(audio_dir)
        .with_context(|| format!("cannot list {}", audio_dir.display()))?
    {
        let entry = entry.with_context(|| format!("cannot list {}", audio_dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".wav") {
            out.insert(stem.to_string());
        }
    }
    Ok(out)
}

/// Shortens a list for a note: the first `n` entries and how many more.
fn list(names: &[String], n: usize) -> String {
    if names.len() <= n {
        names.join(", ")
    } else {
        format!("{}, ... ({} more)", names[..n].join(", "), names.len() - n)
    }
}

impl Task for Icbhi {
    fn name(&self) -> String {
        match (
            self.options.level,
            self.options.labels,
            &self.options.labels_csv,
        ) {
            (Level::Cycle, _, _) => "icbhi_cycle",
            (Level::Recording, _, Some(_)) => "icbhi_labels",
            (Level::Recording, LabelSource::Diagnosis, None) => "icbhi_diagnosis",
            (Level::Recording, LabelSource::Annotations, None) => "icbhi",
        }
        .into()
    }

    fn description(&self) -> String {
        match (
            self.options.level,
            self.options.labels,
            &self.options.labels_csv,
        ) {
            (Level::Cycle, _, _) => {
                "ICBHI 2017 respiratory cycles: normal / crackle / wheeze / both".into()
            }
            (Level::Recording, _, Some(csv)) => format!(
                "ICBHI 2017 respiratory recordings, labels from {}",
                csv.display()
            ),
            (Level::Recording, LabelSource::Diagnosis, None) => {
                "ICBHI 2017 respiratory recordings: healthy vs unhealthy patient (diagnosis)".into()
            }
            (Level::Recording, LabelSource::Annotations, None) => {
                "ICBHI 2017 respiratory recordings: normal vs abnormal (crackles or wheezes)".into()
            }
        }
    }

    fn default_data_dir(&self) -> PathBuf {
        PathBuf::from("data/icbhi")
    }

    fn resources(&self) -> Vec<Resource> {
        let file = |name: &str, unpack| Resource {
            url: format!("{BASE_URL}/{name}"),
            file_name: name.into(),
            // Not pinned: the only md5/size for the zip come from third parties (see the crate
            // docs), and the text files have none.
            md5: None,
            size: None,
            unpack,
        };
        vec![
            file(ARCHIVE_NAME, Unpack::Zip),
            file(SPLIT_FILE, Unpack::None),
            file(DIAGNOSIS_FILE, Unpack::None),
        ]
    }

    fn manual_download(&self, data_dir: &Path) -> Option<String> {
        Some(format!(
            "The ICBHI 2017 host is often down. To install the dataset by hand, download these \
             files and place them under the data directory {dir} (paths relative to --data-dir):\n  \
             1. {BASE_URL}/{ARCHIVE_NAME} (about 2 GB): unzip it into {dir} so that \
             {AUDIO_DIR}/ holds the .wav and .txt files (e.g. {AUDIO_DIR}/101_1b1_Al_sc_Meditron.wav); \
             or save the zip unopened as .downloads/{ARCHIVE_NAME} and re-run `icbhi download` to \
             unpack it;\n  \
             2. {BASE_URL}/{SPLIT_FILE} -> {SPLIT_FILE};\n  \
             3. {BASE_URL}/{DIAGNOSIS_FILE} -> {DIAGNOSIS_FILE}.\n\
             Then run `icbhi run --data-dir {dir}`.",
            dir = data_dir.display(),
        ))
    }

    fn unpack_dir(&self, data_dir: &Path) -> PathBuf {
        // The zip's top folder is ICBHI_final_database/, which lives inside --data-dir.
        data_dir.to_path_buf()
    }

    fn after_fetch(&self, data_dir: &Path, resource: &Resource, downloaded: &Path) -> Result<()> {
        if resource.unpack != Unpack::None {
            return Ok(());
        }
        let target = data_dir.join(&resource.file_name);
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
        let tmp = data_dir.join(format!(".{}.tmp", resource.file_name));
        std::fs::copy(downloaded, &tmp).with_context(|| {
            format!("cannot copy {} to {}", downloaded.display(), tmp.display())
        })?;
        std::fs::rename(&tmp, &target)
            .with_context(|| format!("cannot move {} to {}", tmp.display(), target.display()))?;
        Ok(())
    }

    fn is_present(&self, data_dir: &Path) -> bool {
        data_dir.join(AUDIO_DIR).is_dir()
            && data_dir.join(SPLIT_FILE).is_file()
            && (self.options.labels != LabelSource::Diagnosis
                || data_dir.join(DIAGNOSIS_FILE).is_file())
    }

    fn load(&self, data_dir: &Path) -> Result<Dataset> {
        let audio_dir = data_dir.join(AUDIO_DIR);
        if !audio_dir.is_dir() {
            bail!("{} not found; {HINT}", audio_dir.display());
        }
        let split_path = data_dir.join(SPLIT_FILE);
        let split = parse_split_file(&split_path, &read_text(&split_path, HINT)?)?;
        let on_disk = recordings_on_disk(&audio_dir)?;
        let mut notes = Vec::new();

        for (name, first, again) in &split.duplicates {
            notes.push(format!(
                "{SPLIT_FILE}: {name} is listed twice (lines {first} and {again}); counted once"
            ));
        }
        let listed: BTreeMap<&str, Partition> = split
            .entries
            .iter()
            .map(|(n, p)| (n.as_str(), *p))
            .collect();
        let missing: Vec<String> = split
            .entries
            .iter()
            .filter(|(n, _)| !on_disk.contains(n))
            .map(|(n, _)| format!("{n}.wav"))
            .collect();
        let unlisted: Vec<String> = on_disk
            .iter()
            .filter(|n| !listed.contains_key(n.as_str()))
            .map(|n| format!("{n}.wav"))
            .collect();
        // Recordings used: listed and present, sorted by name.
        let mut recordings: Vec<(String, RecordingName, Partition)> = Vec::new();
        for (name, partition) in &listed {
            if on_disk.contains(*name) {
                let parsed = RecordingName::parse(name).map_err(anyhow::Error::msg)?;
                recordings.push((name.to_string(), parsed, *partition));
            }
        }
        if recordings.is_empty() {
            bail!(
                "none of the {} recordings listed in {} is in {} (e.g. {}.wav); {HINT}",
                split.entries.len(),
                split_path.display(),
                audio_dir.display(),
                split.entries[0].0
            );
        }
        if !missing.is_empty() {
            notes.push(format!(
                "{SPLIT_FILE} lists {} recording(s) not found in {}, left out: {}",
                missing.len(),
                audio_dir.display(),
                list(&missing, 10)
            ));
        }
        if !unlisted.is_empty() {
            notes.push(format!(
                "{} holds {} recording(s) that {SPLIT_FILE} does not list, left out: {}",
                audio_dir.display(),
                unlisted.len(),
                list(&unlisted, 10)
            ));
        }

        let (class_names, items) = match (self.options.level, self.options.labels) {
            _ if self.options.labels_csv.is_some() => self.csv_items(&recordings, &mut notes)?,
            // `Icbhi::new` rejects `--level cycle` with diagnosis labels.
            (_, LabelSource::Diagnosis) => {
                let path = data_dir.join(DIAGNOSIS_FILE);
                let diagnosis = parse_diagnosis(&path, &read_text(&path, HINT)?)?;
                let mut items = Vec::new();
                for (name, rec, partition) in &recordings {
                    let Some(d) = diagnosis.get(&rec.patient) else {
                        bail!(
                            "{}: no diagnosis for patient {} (recording {name}.wav)",
                            path.display(),
                            rec.patient
                        );
                    };
                    items.push(item(
                        name,
                        usize::from(!d.eq_ignore_ascii_case("healthy")),
                        *partition,
                        rec,
                        None,
                    ));
                }
                (vec!["healthy".into(), "unhealthy".into()], items)
            }
            (level, LabelSource::Annotations) => {
                let mut items = Vec::new();
                let mut empty = Vec::new();
                for (name, rec, partition) in &recordings {
                    let txt = audio_dir.join(format!("{name}.txt"));
                    let hint = format!("every recording needs its cycle annotations; {HINT}");
                    let cycles = parse_cycles(&txt, &read_text(&txt, &hint)?)?;
                    if cycles.is_empty() {
                        empty.push(format!("{name}.txt"));
                    }
                    match level {
                        Level::Recording => {
                            let abnormal = cycles.iter().any(|c| c.crackles || c.wheezes);
                            items.push(item(name, usize::from(abnormal), *partition, rec, None));
                        }
                        Level::Cycle => {
                            for c in &cycles {
                                items.push(item(
                                    name,
                                    c.class(),
                                    *partition,
                                    rec,
                                    Some((c.start, c.end)),
                                ));
                            }
                        }
                    }
                }
                if !empty.is_empty() {
                    notes.push(format!(
                        "{} annotation file(s) list no cycle{}: {}",
                        empty.len(),
                        if level == Level::Recording {
                            " (their recordings count as normal)"
                        } else {
                            ""
                        },
                        list(&empty, 10)
                    ));
                }
                let names = match level {
                    Level::Recording => vec!["normal".into(), "abnormal".into()],
                    Level::Cycle => CYCLE_CLASSES.iter().map(|s| s.to_string()).collect(),
                };
                (names, items)
            }
        };
        if items.is_empty() {
            bail!("{}: no item to classify", data_dir.display());
        }

        // The official split's patient overlap.
        let patients_in = |p: Partition| -> BTreeSet<&str> {
            items
                .iter()
                .filter(|it| it.split == p)
                .filter_map(|it| it.group.as_deref())
                .collect()
        };
        let (train, test) = (patients_in(Partition::Train), patients_in(Partition::Test));
        let both: Vec<String> = train.intersection(&test).map(|s| s.to_string()).collect();
        let count = |p: Partition| items.iter().filter(|it| it.split == p).count();
        notes.push(format!(
            "{} items from {} recordings of {} patients; official split: {} train, {} test",
            items.len(),
            recordings.len(),
            train.union(&test).count(),
            count(Partition::Train),
            count(Partition::Test)
        ));
        if !both.is_empty() {
            notes.push(format!(
                "the official split is not patient-disjoint: patient(s) {} have recordings in both \
                 train and test; `--split patient` gives a strictly patient-disjoint split",
                both.join(", ")
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
        Protocol::PredefinedSplit
    }

    fn split_names() -> &'static [&'static str] {
        &["patient"]
    }

    fn custom_protocol(&self, name: &str, test_fraction: f64, seed: u64) -> Option<Protocol> {
        Protocol::group_random_named(name, "patient", test_fraction, seed)
    }

    fn extra_metrics(
        &self,
        y_true: &[usize],
        y_pred: &[usize],
        class_names: &[String],
    ) -> Option<serde_json::Value> {
        icbhi_metrics(y_true, y_pred, class_names)
    }
}

impl Icbhi {
    /// Items labelled by `--labels-csv`: classes are the distinct label values, sorted.
    fn csv_items(
        &self,
        recordings: &[(String, RecordingName, Partition)],
        notes: &mut Vec<String>,
    ) -> Result<(Vec<String>, Vec<Item>)> {
        let path = self
            .options
            .labels_csv
            .as_deref()
            .expect("checked by caller");
        let table = read_csv(
            path,
            &["file", "label"],
            "pass an existing --labels-csv FILE",
        )?;
        let mut labels: BTreeMap<String, (String, usize)> = BTreeMap::new();
        for (line, row) in &table.rows {
            let file = row["file"].trim();
            let name = file.strip_suffix(".wav").unwrap_or(file).to_string();
            let label = row["label"].trim().to_string();
            if name.is_empty() || label.is_empty() {
                bail!("{}: line {line}: empty file or label", path.display());
            }
            if let Some((prev, first)) = labels.get(&name) {
                if *prev != label {
                    bail!(
                        "{}: line {line}: {name} is {label:?} here but {prev:?} on line {first}",
                        path.display()
                    );
                }
                notes.push(format!(
                    "{}: {name} is listed twice (lines {first} and {line})",
                    path.display()
                ));
                continue;
            }
            labels.insert(name, (label, *line));
        }
        let class_names: Vec<String> = labels
            .values()
            .map(|(l, _)| l.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let known: BTreeSet<&str> = recordings.iter().map(|r| r.0.as_str()).collect();
        let unknown: Vec<String> = labels
            .keys()
            .filter(|n| !known.contains(n.as_str()))
            .cloned()
            .collect();
        let mut unlabelled = Vec::new();
        let mut items = Vec::new();
        for (name, rec, partition) in recordings {
            match labels.get(name) {
                Some((label, _)) => {
                    let index = class_names.binary_search(label).expect("collected above");
                    items.push(item(name, index, *partition, rec, None));
                }
                None => unlabelled.push(format!("{name}.wav")),
            }
        }
        if items.is_empty() {
            bail!(
                "{}: none of its {} file names is a recording of the dataset (e.g. {})",
                path.display(),
                labels.len(),
                labels.keys().next().map_or("nothing", String::as_str)
            );
        }
        if !unknown.is_empty() {
            notes.push(format!(
                "{} labels {} name(s) that are not recordings of the split, ignored: {}",
                path.display(),
                unknown.len(),
                list(&unknown, 10)
            ));
        }
        if !unlabelled.is_empty() {
            notes.push(format!(
                "{} has no label for {} recording(s), left out: {}",
                path.display(),
                unlabelled.len(),
                list(&unlabelled, 10)
            ));
        }
        notes.push(format!(
            "classes from {} in sorted order: {}",
            path.display(),
            class_names.join(", ")
        ));
        Ok((class_names, items))
    }
}

fn item(
    name: &str,
    label: usize,
    split: Partition,
    rec: &RecordingName,
    segment: Option<(f64, f64)>,
) -> Item {
    Item {
        path: format!("{AUDIO_DIR}/{name}.wav"),
        label,
        split,
        group: Some(rec.patient.to_string()),
        segment,
    }
}

/// ICBHI sensitivity, specificity and score (challenge definition, exact matching) with the
/// negative class `normal` (or `healthy`) and every other class positive; also the grouped
/// (binary) view. `None` when no class is named normal/healthy or there is no positive class.
pub fn icbhi_metrics(
    y_true: &[usize],
    y_pred: &[usize],
    class_names: &[String],
) -> Option<serde_json::Value> {
    let negative = class_names
        .iter()
        .position(|c| c.eq_ignore_ascii_case("normal") || c.eq_ignore_ascii_case("healthy"))?;
    let positives: Vec<usize> = (0..class_names.len()).filter(|&c| c != negative).collect();
    if positives.is_empty() {
        return None;
    }
    let n = class_names.len();
    let exact = IcbhiScore::compute(y_true, y_pred, n, &positives, Matching::Exact).ok()?;
    let grouped = IcbhiScore::compute(y_true, y_pred, n, &positives, Matching::Grouped).ok()?;
    Some(serde_json::json!({
        "sensitivity": exact.sensitivity,
        "specificity": exact.specificity,
        "score": exact.score,
        "matching": "exact",
        "negative_class": class_names[negative],
        "positive_classes": positives.iter().map(|&c| class_names[c].clone()).collect::<Vec<_>>(),
        "definition": "Se = correctly classified abnormal / all abnormal; \
                       Sp = correctly classified normal / all normal; score = (Se + Sp) / 2",
        "grouped": {
            "sensitivity": grouped.sensitivity,
            "specificity": grouped.specificity,
            "score": grouped.score,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recording_names_parse_and_bad_ones_say_why() {
        let r = RecordingName::parse("226_1b1_Pl_sc_LittC2SE").unwrap();
        assert_eq!(r.patient, 226);
        assert_eq!((r.chest.as_str(), r.device.as_str()), ("Pl", "LittC2SE"));
        assert!(RecordingName::parse("226_1b1_Xx_sc_LittC2SE")
            .unwrap_err()
            .contains("chest location \"Xx\""));
        assert!(RecordingName::parse("226_1b1_Pl_sc")
            .unwrap_err()
            .contains("not a recording name"));
        assert!(RecordingName::parse("abc_1b1_Pl_sc_Meditron")
            .unwrap_err()
            .contains("patient"));
        assert!(RecordingName::parse("101_1b1_Pl_xx_Meditron")
            .unwrap_err()
            .contains("mode"));
    }

    #[test]
    fn cycles_tolerate_crlf_and_blank_lines_and_reject_bad_lines() {
        let p = Path::new("x.txt");
        let c = parse_cycles(p, "0.036\t0.579\t0\t0\r\n\r\n0.579\t2.45\t1\t1\r\n\n").unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].class(), 3);
        assert_eq!(c[0].class(), 0);
        let e = parse_cycles(p, "0.1 0.5 0 0\n0.5 0.4 0 1\n").unwrap_err();
        assert!(e.to_string().contains("x.txt: line 2"), "{e}");
        let e = parse_cycles(p, "0.1 0.5 2 0\n").unwrap_err();
        assert!(e.to_string().contains("crackles flag \"2\""), "{e}");
        let e = parse_cycles(p, "0.1 0.5 0\n").unwrap_err();
        assert!(e.to_string().contains("3 fields"), "{e}");
    }

    #[test]
    fn split_file_duplicates_are_tolerated_conflicts_are_not() {
        let p = Path::new("s.txt");
        let s = parse_split_file(
            p,
            "101_1b1_Al_sc_Meditron\ttrain\r\n101_1b1_Al_sc_Meditron\ttrain\r\n102_1b1_Ar_sc_Meditron.wav\ttest\r\n",
        )
        .unwrap();
        assert_eq!(s.entries.len(), 2);
        assert_eq!(s.entries[1].0, "102_1b1_Ar_sc_Meditron");
        assert_eq!(s.duplicates, [("101_1b1_Al_sc_Meditron".to_string(), 1, 2)]);
        let e = parse_split_file(
            p,
            "101_1b1_Al_sc_Meditron\ttrain\n101_1b1_Al_sc_Meditron\ttest\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = parse_split_file(p, "101_1b1_Al_sc_Meditron\tvalid\n").unwrap_err();
        assert!(e.to_string().contains("\"valid\""), "{e}");
    }

    #[test]
    fn metrics_follow_the_challenge_definition() {
        let names: Vec<String> = CYCLE_CLASSES.iter().map(|s| s.to_string()).collect();
        // 2 normal (1 right), 3 abnormal: crackle right, wheeze predicted as both, both right.
        let m = icbhi_metrics(&[0, 0, 1, 2, 3], &[0, 1, 1, 3, 3], &names).unwrap();
        assert_eq!(m["sensitivity"], 2.0 / 3.0);
        assert_eq!(m["specificity"], 0.5);
        assert_eq!(m["grouped"]["sensitivity"], 1.0);
        assert_eq!(
            m["positive_classes"],
            serde_json::json!(["crackle", "wheeze", "both"])
        );
        let healthy = ["unhealthy".to_string(), "healthy".to_string()];
        let m = icbhi_metrics(&[0, 1, 1], &[0, 0, 1], &healthy).unwrap();
        assert_eq!(m["negative_class"], "healthy");
        assert_eq!(m["sensitivity"], 1.0);
        assert_eq!(m["specificity"], 0.5);
        assert!(icbhi_metrics(&[0], &[0], &["a".into(), "b".into()]).is_none());
    }

    #[test]
    fn cycle_level_rejects_recording_level_label_sources() {
        let o = IcbhiOptions {
            level: Level::Cycle,
            labels: LabelSource::Diagnosis,
            labels_csv: None,
        };
        assert!(Icbhi::new(&o).is_err());
        let o = IcbhiOptions {
            level: Level::Recording,
            labels: LabelSource::Diagnosis,
            labels_csv: None,
        };
        assert_eq!(Icbhi::new(&o).unwrap().name(), "icbhi_diagnosis");
    }
}
