//! Speech Commands (Warden 2018): one-second 16 kHz recordings of single spoken words.
//! v0.01 (2017) has 64,727 clips of 30 words, v0.02 (2018) 105,829 clips of 35 words
//! (adds backward, forward, follow, learn, visual). `--version 1|2` picks one (default 2); the
//! task is named `speechcommands_v1` / `speechcommands_v2` so features and results never mix.
//!
//! # Layout
//!
//! The official archives have no top-level folder: they unpack straight into the data dir
//! (default `data/speech_commands_v0.01` / `data/speech_commands_v0.02`):
//!
//! ```text
//! {word}/{speakerhash}_nohash_{n}.wav     16 kHz mono 16-bit, 1 s (some shorter)
//! validation_list.txt                      one relative path per line, e.g. right/a69b9b3e_nohash_0.wav
//! testing_list.txt                         same format
//! _background_noise_/*.wav                 6 long noise recordings (not a word class)
//! ```
//!
//! # Labels
//!
//! By default every word folder is a class (30 for v0.01, 35 for v0.02), sorted by name.
//! `--classes 12` is the SUPERB / TensorFlow-tutorial task: `yes, no, up, down, left, right, on,
//! off, stop, go`, then `_unknown_` (every other word) and `_silence_`. Silence items are 1 s crops
//! of the `_background_noise_` recordings ([`Item::segment`]), as many per split as an average
//! word has in that split (`round(word clips in the split / number of words)`). To keep them
//! from leaking across splits, each noise file is divided in time: its first 80% feeds the
//! training crops, the next 10% validation, the last 10% test; within a part, crops go round-robin
//! over the files (in name order) and sit at evenly spaced, deterministic offsets. (SUPERB's own
//! test set is the separate `speech_commands_test_set_v0.0X.tar.gz`; this task uses the
//! `testing_list.txt` clips, the official protocol of the main archive.)
//!
//! Clips shorter than 1 s are zero-padded at the end to exactly 16,000 samples, as the standard
//! recipe does (TensorFlow's `input_data.py`); longer ones are cut to 1 s ([`Task::prepare`]).
//!
//! # Protocol
//!
//! Official ([`Protocol::PredefinedSplit`]): clips in `validation_list.txt` are the validation
//! split (it selects the best epoch), clips in `testing_list.txt` the test split, every other
//! word clip trains. The lists assign whole speakers (by hash) to a split; an item's group is its
//! speaker hash, so `--split random` with `--val-fraction` keeps speakers whole in validation.
//!
//! # Download
//!
//! - `http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz`, md5
//!   `6b74f3901214cb2c2934e98196829835` (HEAR's pin);
//! - `http://download.tensorflow.org/data/speech_commands_v0.01.tar.gz`, md5
//!   `3cd23799cb2bbdec517f1cc028f8d43c` (from a public loader's checksum table whose v0.02
//!   entry matches HEAR's).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use pipeline::download::{Resource, Unpack};
use pipeline::table::check_files_exist;
use pipeline::task::cut_segment;
use pipeline::{Dataset, Item, Partition, Protocol, Task};

/// Samples in one second at 16 kHz: every clip is padded or cut to this.
pub const CLIP_SAMPLES: usize = 16_000;
/// The ten command words of the 12-class task, in label order.
pub const COMMANDS: [&str; 10] = [
    "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
];
/// The 12-class task's label for every non-command word.
pub const UNKNOWN: &str = "_unknown_";
/// The 12-class task's label for background-noise crops.
pub const SILENCE: &str = "_silence_";
/// The folder of long noise recordings.
pub const BACKGROUND: &str = "_background_noise_";
/// Parts of each noise file that feed training, validation and test silence crops.
pub const SILENCE_PARTS: [(Partition, f64, f64); 3] = [
    (Partition::Train, 0.0, 0.8),
    (Partition::Valid, 0.8, 0.9),
    (Partition::Test, 0.9, 1.0),
];

/// Task options.
#[derive(Debug, Clone, clap::Args)]
pub struct SpeechCommandsOptions {
    /// Dataset version: 1 (v0.01, 30 words) or 2 (v0.02, 35 words).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub version: u8,
    /// `12`: the SUPERB task (10 commands, _unknown_, _silence_); default: every word a class.
    #[arg(long, value_name = "12")]
    pub classes: Option<usize>,
}

impl Default for SpeechCommandsOptions {
    fn default() -> Self {
        Self {
            version: 2,
            classes: None,
        }
    }
}

/// The Speech Commands task.
#[derive(Debug, Clone)]
pub struct SpeechCommands {
    options: SpeechCommandsOptions,
}

impl SpeechCommands {
    /// A task with these options (`--classes` must be 12 when given).
    pub fn new(options: &SpeechCommandsOptions) -> Result<Self> {
        if !(1..=2).contains(&options.version) {
            bail!("--version must be 1 or 2, got {}", options.version);
        }
        if let Some(n) = options.classes {
            if n != 12 {
                bail!("--classes supports 12 (the SUPERB task) only, got {n}; leave it out for all words");
            }
        }
        Ok(Self {
            options: options.clone(),
        })
    }

    fn superb(&self) -> bool {
        self.options.classes == Some(12)
    }

    /// `speech_commands_v0.01` or `speech_commands_v0.02`.
    pub fn archive_stem(&self) -> String {
        format!("speech_commands_v0.0{}", self.options.version)
    }

    /// Words in the official release of this version.
    pub fn expected_words(&self) -> usize {
        if self.options.version == 1 {
            30
        } else {
            35
        }
    }

    fn hint(&self) -> String {
        let version = if self.options.version == 1 {
            " --version 1"
        } else {
            ""
        };
        format!("run `speechcommands download{version}` or pass --data-dir")
    }
}

/// Reads a split list: one `word/file.wav` path per line (blank lines skipped, CRLF tolerated).
fn read_list(path: &Path, hint: &str) -> Result<Vec<String>> {
    if !path.is_file() {
        bail!("{} not found; {hint}", path.display());
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_start_matches('\u{feff}').trim();
        if line.is_empty() {
            continue;
        }
        let ok = match line.split_once('/') {
            Some((word, file)) => {
                !word.is_empty()
                    && !file.contains('/')
                    && file.to_ascii_lowercase().ends_with(".wav")
            }
            None => false,
        };
        if !ok {
            bail!(
                "{}: line {}: expected a path like `word/speaker_nohash_0.wav`, found {line:?}",
                path.display(),
                i + 1
            );
        }
        out.push(line.to_string());
    }
    Ok(out)
}

/// The `.wav` files in `dir`, sorted by name.
fn wav_files(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.')
            && name.to_ascii_lowercase().ends_with(".wav")
            && entry.path().is_file()
        {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// The speaker hash of `speakerhash_nohash_n.wav` (the stem when there is no `_nohash_`).
pub fn speaker_of(file_name: &str) -> &str {
    match file_name.split_once("_nohash_") {
        Some((speaker, _)) => speaker,
        None => file_name
            .rsplit_once('.')
            .map_or(file_name, |(stem, _)| stem),
    }
}

/// Start times (seconds) of `count` 1 s crops spread evenly over `[from, to)` (crops may
/// overlap when the part is short; none when it is shorter than 1 s).
pub fn crop_starts(from: f64, to: f64, count: usize) -> Vec<f64> {
    // A part within a microsecond of 1 s counts as 1 s (float products like 10 * 0.1).
    let room = to - from - 1.0;
    if room < -1e-6 || count == 0 {
        return Vec::new();
    }
    let room = room.max(0.0);
    if count == 1 {
        return vec![from + room / 2.0];
    }
    (0..count)
        .map(|i| from + room * i as f64 / (count - 1) as f64)
        .collect()
}

impl Task for SpeechCommands {
    fn name(&self) -> String {
        let base = format!("speechcommands_v{}", self.options.version);
        if self.superb() {
            format!("{base}_12")
        } else {
            base
        }
    }

    fn description(&self) -> String {
        let v = self.options.version;
        if self.superb() {
            format!("Speech Commands v0.0{v}, 12 classes (10 commands, _unknown_, _silence_)")
        } else {
            format!(
                "Speech Commands v0.0{v} keyword spotting ({} words)",
                self.expected_words()
            )
        }
    }

    fn default_data_dir(&self) -> PathBuf {
        PathBuf::from("data").join(self.archive_stem())
    }

    fn resources(&self) -> Vec<Resource> {
        let stem = self.archive_stem();
        let md5 = if self.options.version == 1 {
            "3cd23799cb2bbdec517f1cc028f8d43c"
        } else {
            "6b74f3901214cb2c2934e98196829835"
        };
        vec![Resource {
            url: format!("http://download.tensorflow.org/data/{stem}.tar.gz"),
            file_name: format!("{stem}.tar.gz"),
            md5: Some(md5.into()),
            size: None,
            unpack: Unpack::TarGz,
        }]
    }

    /// The archives have no top-level folder: they unpack into the data dir itself.
    fn unpack_dir(&self, data_dir: &Path) -> PathBuf {
        data_dir.to_path_buf()
    }

    fn is_present(&self, data_dir: &Path) -> bool {
        data_dir.join("validation_list.txt").is_file()
            && data_dir.join("testing_list.txt").is_file()
    }

    fn load(&self, data_dir: &Path) -> Result<Dataset> {
        let hint = self.hint();
        let valid = read_list(&data_dir.join("validation_list.txt"), &hint)?;
        let test = read_list(&data_dir.join("testing_list.txt"), &hint)?;
        let mut split_of: BTreeMap<&str, Partition> = BTreeMap::new();
        let mut both = Vec::new();
        for p in &valid {
            split_of.insert(p, Partition::Valid);
        }
        for p in &test {
            if split_of.insert(p, Partition::Test).is_some() {
                both.push(p.clone());
            }
        }
        if !both.is_empty() {
            bail!(
                "{} clips are in both validation_list.txt and testing_list.txt, e.g. {}",
                both.len(),
                both[0]
            );
        }
        check_files_exist(data_dir, split_of.keys().copied(), &hint)?;

        // Word folders: every folder but the background noise and hidden ones.
        let mut words = Vec::new();
        for entry in std::fs::read_dir(data_dir)
            .with_context(|| format!("cannot list {}", data_dir.display()))?
        {
            let entry = entry.with_context(|| format!("cannot list {}", data_dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_dir() && !name.starts_with('.') && name != BACKGROUND {
                words.push(name);
            }
        }
        words.sort();
        if words.is_empty() {
            bail!("{}: no word folders found; {hint}", data_dir.display());
        }

        let superb = self.superb();
        let class_names: Vec<String> = if superb {
            COMMANDS
                .iter()
                .map(|s| s.to_string())
                .chain([UNKNOWN.to_string(), SILENCE.to_string()])
                .collect()
        } else {
            words.clone()
        };
        let label_of = |w: usize| -> usize {
            if superb {
                COMMANDS
                    .iter()
                    .position(|c| *c == words[w])
                    .unwrap_or(COMMANDS.len())
            } else {
                w
            }
        };

        let mut items = Vec::new();
        let mut per_split: BTreeMap<Partition, usize> = BTreeMap::new();
        for (w, word) in words.iter().enumerate() {
            for file in wav_files(&data_dir.join(word))? {
                let path = format!("{word}/{file}");
                let split = split_of
                    .get(path.as_str())
                    .copied()
                    .unwrap_or(Partition::Train);
                *per_split.entry(split).or_default() += 1;
                items.push(Item {
                    label: label_of(w),
                    split,
                    group: Some(speaker_of(&file).to_string()),
                    segment: None,
                    path,
                });
            }
        }
        let listed_words: BTreeSet<&str> = split_of
            .keys()
            .filter_map(|p| p.split_once('/').map(|(w, _)| w))
            .collect();
        if let Some(w) = listed_words.iter().find(|w| !words.iter().any(|x| x == *w)) {
            bail!("the split lists name clips of {w:?}, which is not a word folder; {hint}");
        }

        let mut notes = vec![format!(
            "{} words, {} clips: {} train, {} valid, {} test",
            words.len(),
            items.len(),
            per_split.get(&Partition::Train).unwrap_or(&0),
            per_split.get(&Partition::Valid).unwrap_or(&0),
            per_split.get(&Partition::Test).unwrap_or(&0),
        )];
        if words.len() != self.expected_words() {
            notes.push(format!(
                "found {} word folders; the official v0.0{} release has {}",
                words.len(),
                self.options.version,
                self.expected_words()
            ));
        }
        if superb {
            let missing: Vec<&str> = COMMANDS
                .iter()
                .copied()
                .filter(|c| !words.iter().any(|w| w == c))
                .collect();
            if !missing.is_empty() {
                notes.push(format!(
                    "command word(s) without a folder (classes with no clips): {}",
                    missing.join(", ")
                ));
            }
            let silence = self.silence_items(data_dir, &per_split, words.len(), &hint)?;
            let counts: Vec<String> = SILENCE_PARTS
                .iter()
                .map(|(p, _, _)| {
                    format!("{} {p}", silence.iter().filter(|it| it.split == *p).count())
                })
                .collect();
            notes.push(format!(
                "{SILENCE}: {} one-second crops of {BACKGROUND}/ ({})",
                silence.len(),
                counts.join(", ")
            ));
            items.extend(silence);
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

    /// Cuts the item's segment (silence crops), then zero-pads or cuts to exactly 1 s.
    fn prepare(&self, item: &Item, samples: Vec<f32>) -> Vec<f32> {
        let mut clip = match item.segment {
            Some((start, end)) => cut_segment(&samples, start, end),
            None => samples,
        };
        clip.resize(CLIP_SAMPLES, 0.0);
        clip
    }
}

impl SpeechCommands {
    /// The `_silence_` items: per split, `round(word clips in the split / words)` crops from
    /// that split's part of each noise file.
    fn silence_items(
        &self,
        data_dir: &Path,
        per_split: &BTreeMap<Partition, usize>,
        num_words: usize,
        hint: &str,
    ) -> Result<Vec<Item>> {
        let dir = data_dir.join(BACKGROUND);
        if !dir.is_dir() {
            bail!(
                "{} not found (the _silence_ class of --classes 12 is cut from it); {hint}",
                dir.display()
            );
        }
        let mut files = Vec::new();
        for name in wav_files(&dir)? {
            let path = dir.join(&name);
            let info = audio_io::probe(&path).with_context(|| {
                format!("cannot read the background noise file {}", path.display())
            })?;
            let frames = info.frames.with_context(|| {
                format!("{}: the header does not give its length", path.display())
            })?;
            files.push((name, frames as f64 / f64::from(info.sample_rate)));
        }
        if files.is_empty() {
            bail!("{}: no .wav files; {hint}", dir.display());
        }
        let label = COMMANDS.len() + 1;
        let mut items = Vec::new();
        for (split, from, to) in SILENCE_PARTS {
            let words_in_split = *per_split.get(&split).unwrap_or(&0);
            let want = (words_in_split as f64 / num_words.max(1) as f64).round() as usize;
            // Files whose part of this split holds at least one second.
            let usable: Vec<&(String, f64)> = files
                .iter()
                .filter(|(_, secs)| secs * (to - from) >= 1.0 - 1e-6)
                .collect();
            if usable.is_empty() {
                continue;
            }
            for (f, (name, secs)) in usable.iter().enumerate() {
                let count = want / usable.len() + usize::from(f < want % usable.len());
                for start in crop_starts(secs * from, secs * to, count) {
                    let start = (start * 1000.0).round() / 1000.0;
                    items.push(Item {
                        path: format!("{BACKGROUND}/{name}"),
                        label,
                        split,
                        group: Some(format!("{BACKGROUND}/{name}")),
                        segment: Some((start, start + 1.0)),
                    });
                }
            }
        }
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speakers_and_crops() {
        assert_eq!(speaker_of("0a7c2a8d_nohash_1.wav"), "0a7c2a8d");
        assert_eq!(speaker_of("white_noise.wav"), "white_noise");
        assert_eq!(crop_starts(0.0, 10.0, 3), vec![0.0, 4.5, 9.0]);
        assert_eq!(crop_starts(8.0, 9.5, 1), vec![8.25]);
        assert!(crop_starts(0.0, 0.6, 2).is_empty());
    }

    #[test]
    fn clips_are_exactly_one_second() {
        let task = SpeechCommands::new(&SpeechCommandsOptions::default()).unwrap();
        let item = |segment| Item {
            path: "x/a_nohash_0.wav".into(),
            label: 0,
            split: Partition::Train,
            group: None,
            segment,
        };
        let short = task.prepare(&item(None), vec![0.5; 12_000]);
        assert_eq!(short.len(), CLIP_SAMPLES);
        assert_eq!(short[11_999], 0.5);
        assert_eq!(short[12_000], 0.0);
        assert_eq!(
            task.prepare(&item(None), vec![0.5; 17_000]).len(),
            CLIP_SAMPLES
        );
        let long: Vec<f32> = (0..160_000).map(|i| i as f32).collect();
        let crop = task.prepare(&item(Some((2.0, 3.0))), long);
        assert_eq!(crop.len(), CLIP_SAMPLES);
        assert_eq!(crop[0], 32_000.0);
    }

    #[test]
    fn bad_options_are_errors() {
        let bad = SpeechCommandsOptions {
            version: 2,
            classes: Some(10),
        };
        assert!(SpeechCommands::new(&bad).is_err());
    }
}
