//! The corpus every ESC-50 integration test builds: the official layout (`audio/` of 44.1 kHz
//! mono 16-bit WAVs named `{fold}-{src}-{take}-{target}.wav`, `meta/esc50.csv` with the real
//! header), 5 classes x 5 folds, one source clip per class and fold in `takes` takes.

use std::path::{Path, PathBuf};

use pipeline::testing::{class_tone, write_wav, WavEncoding};

/// The five classes, with their ESC-10 flag.
pub const CATEGORIES: [(&str, bool); 5] = [
    ("dog", true),
    ("rooster", true),
    ("pig", false),
    ("cow", false),
    ("frog", false),
];

/// Writes `ESC-50-master/` under `parent` with clips of `seconds` and returns its path.
pub fn make_corpus(parent: &Path, seconds: f64, takes: &[&str]) -> PathBuf {
    let root = parent.join("ESC-50-master");
    let mut csv = String::from("filename,fold,target,category,esc10,src_file,take\n");
    for fold in 1..=5u32 {
        for (target, (category, esc10)) in CATEGORIES.iter().enumerate() {
            let src = 100_000 + fold as usize * 100 + target;
            for (t, take) in takes.iter().enumerate() {
                let name = format!("{fold}-{src}-{take}-{target}.wav");
                let seed = (fold as u64) * 1000 + target as u64 * 10 + t as u64;
                let audio = class_tone(target, seed, seconds, 44_100);
                write_wav(
                    &root.join("audio").join(&name),
                    44_100,
                    1,
                    WavEncoding::Pcm16,
                    &audio,
                );
                let esc10 = if *esc10 { "True" } else { "False" };
                csv.push_str(&format!(
                    "{name},{fold},{target},{category},{esc10},{src},{take}\n"
                ));
            }
        }
    }
    std::fs::create_dir_all(root.join("meta")).unwrap();
    std::fs::write(root.join("meta/esc50.csv"), csv).unwrap();
    root
}
