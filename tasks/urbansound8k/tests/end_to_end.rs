//! UrbanSound8K end to end on a small corpus in the exact official layout: the real metadata
//! header, `audio/fold1..fold10/[fsID]-[classID]-[occurrenceID]-[sliceID].wav`, and the real mix
//! of formats (8 to 96 kHz, 16/24-bit PCM and 32-bit float, mono and stereo, 0.5 to 1.5 s
//! slices), served as `UrbanSound8K.tar.gz` from 127.0.0.1.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use pipeline::testing::{assert_success as ok, tiny_model_arg as model};
use pipeline::testing::{class_tone, tar_gz_dir, write_wav, TestServer, WavEncoding};
use pipeline::testing::{extract_output, task, task_in, tiny_wavlm_end_to_end};

/// (classID, class): three of the ten classes, so labels are renumbered 0..3 in classID order.
const CLASSES: [(usize, &str); 3] = [(1, "car_horn"), (3, "dog_bark"), (6, "gun_shot")];
const RATES: [u32; 7] = [8_000, 11_025, 16_000, 22_050, 44_100, 48_000, 96_000];
const ENCODINGS: [WavEncoding; 3] = [WavEncoding::Pcm16, WavEncoding::Pcm24, WavEncoding::Float32];
const N: usize = 30;

/// Writes `UrbanSound8K/` under `parent`: 3 classes x 10 folds x 1 slice, every slice in another
/// format. Returns the root.
fn make_corpus(parent: &Path) -> PathBuf {
    let root = parent.join("UrbanSound8K");
    let mut csv = String::from("slice_file_name,fsID,start,end,salience,fold,classID,class\n");
    let mut k = 0usize;
    for fold in 1..=10u32 {
        for (label, (class_id, class)) in CLASSES.iter().enumerate() {
            let fs_id = 100_000 + fold as usize * 37 + label * 1_001;
            let slice = k % 3;
            let name = format!("{fs_id}-{class_id}-0-{slice}.wav");
            let rate = RATES[k % RATES.len()];
            let encoding = ENCODINGS[k % ENCODINGS.len()];
            let channels = 1 + (k % 2) as u16;
            let seconds = 0.5 + (k % 5) as f64 * 0.25;
            let mono = class_tone(label, k as u64 + 7, seconds, rate);
            let samples: Vec<f32> = if channels == 2 {
                mono.iter().flat_map(|&s| [s, 0.8 * s]).collect()
            } else {
                mono
            };
            write_wav(
                &root.join(format!("audio/fold{fold}/{name}")),
                rate,
                channels,
                encoding,
                &samples,
            );
            let start = 1.5 * slice as f64;
            let salience = 1 + k % 2;
            csv.push_str(&format!(
                "{name},{fs_id},{start},{},{salience},{fold},{class_id},{class}\n",
                start + seconds
            ));
            k += 1;
        }
    }
    std::fs::create_dir_all(root.join("metadata")).unwrap();
    std::fs::write(root.join("metadata/UrbanSound8K.csv"), csv).unwrap();
    root
}

fn us8k(dir: &Path, args: &[&str]) -> Command {
    task_in(env!("CARGO_BIN_EXE_urbansound8k"), dir, args)
}

fn read_results(dir: &Path) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(dir.join("results/urbansound8k/tiny-base/results.json")).unwrap(),
    )
    .unwrap()
}

#[test]
fn run_downloads_extracts_and_cross_validates_over_ten_folds() {
    let tmp = tempfile::tempdir().unwrap();
    let src = make_corpus(&tmp.path().join("src"));
    let archive = tar_gz_dir(&src);
    let server = TestServer::serve(HashMap::from([(
        "UrbanSound8K.tar.gz".to_string(),
        archive,
    )]));
    let data = tmp.path().join("data/UrbanSound8K");
    let out = ok(
        us8k(tmp.path(), &["run", "--model", &model(), "--epochs", "10"])
            .arg("--data-dir")
            .arg(&data)
            .arg("--mirror")
            .arg(&server.url)
            .output()
            .unwrap(),
    );
    assert_eq!(server.requests(), 1);
    assert!(data.join("metadata/UrbanSound8K.csv").is_file());
    assert!(data.join("audio/fold10").is_dir());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("note:"),
        "clean corpus, no notes: {stderr}"
    );

    let results = read_results(tmp.path());
    assert_eq!(results["task"], "urbansound8k");
    assert_eq!(results["protocol"]["name"], "official");
    let folds = results["protocol"]["folds"].as_array().unwrap();
    assert_eq!(folds.len(), 10);
    for (k, f) in folds.iter().enumerate() {
        assert_eq!(f["name"], format!("fold{}", k + 1));
        assert_eq!(f["test"], 3, "one slice per class in each fold");
        assert_eq!(f["train"], 27);
    }
    assert_eq!(results["features"]["items"], N);
    assert_eq!(results["features"]["padded"], 0, "every slice is >= 0.5 s");
    for probe in ["linear", "mlp"] {
        let p = &results["probes"][probe];
        assert_eq!(
            p["classes"],
            serde_json::json!(["car_horn", "dog_bark", "gun_shot"])
        );
        let per_fold = p["accuracy"]["per_fold"].as_array().unwrap();
        assert_eq!(per_fold.len(), 10);
        let cm: Vec<Vec<u64>> = serde_json::from_value(p["confusion_matrix"].clone()).unwrap();
        assert_eq!(cm.len(), 3);
        assert_eq!(
            cm.iter().flatten().sum::<u64>(),
            N as u64,
            "each slice tested once"
        );
        for (c, row) in cm.iter().enumerate() {
            assert_eq!(row.iter().sum::<u64>(), 10, "class {c} support");
        }
        let diag: u64 = (0..3).map(|i| cm[i][i]).sum();
        let mean = p["accuracy"]["mean"].as_f64().unwrap();
        assert!(
            (mean - diag as f64 / N as f64).abs() < 1e-9,
            "{probe}: {mean} vs {diag}/{N}"
        );
        assert!((0.0..=1.0).contains(&p["macro_f1"]["mean"].as_f64().unwrap()));
    }
    assert!(tmp
        .path()
        .join("results/urbansound8k/tiny-base/report.md")
        .is_file());
    assert!(tmp
        .path()
        .join("models/urbansound8k_tiny-base_three_classifier.safetensors")
        .is_file());

    // The store keeps each slice's fold and fsID (the validation group).
    let bytes = std::fs::read(
        tmp.path()
            .join("features/urbansound8k_features_tiny-base.safetensors"),
    )
    .unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap();
    let items: Vec<serde_json::Value> = serde_json::from_str(&meta["items"]).unwrap();
    assert_eq!(items.len(), N);
    assert_eq!(items[0]["path"], "audio/fold1/100037-1-0-0.wav");
    assert_eq!(items[0]["split"], "fold1");
    assert_eq!(items[0]["group"], "100037");
    assert_eq!(items[0]["label"], 0);
    assert_eq!(items[29]["split"], "fold10");
    assert_eq!(items[29]["label"], 2);
}

#[test]
fn random_split_reproduces_the_original_study_and_group_random_is_offered() {
    let tmp = tempfile::tempdir().unwrap();
    let data = make_corpus(tmp.path());
    let train = |split: &str| {
        ok(us8k(
            tmp.path(),
            &[
                "run",
                "--split",
                split,
                "--epochs",
                "3",
                "--probe",
                "linear",
                "--model",
                &model(),
            ],
        )
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap());
        read_results(tmp.path())
    };
    let results = train("random");
    assert_eq!(results["protocol"]["name"], "random");
    let folds = results["protocol"]["folds"].as_array().unwrap();
    assert_eq!(folds.len(), 1);
    assert_eq!(folds[0]["test"], 6, "20% of each class's 10 slices");
    assert_eq!(folds[0]["train"], 24);

    let results = train("group-random");
    assert_eq!(results["protocol"]["name"], "group-random");
    assert_eq!(results["protocol"]["folds"][0]["test"], 6);

    let out = us8k(tmp.path(), &["train", "--split", "chapter"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    // Refused when the command line is parsed, with the task's own choices listed.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid value 'chapter' for '--split")
            && stderr.contains("[possible values: official, random, group-random]"),
        "{stderr}"
    );
}

#[test]
fn broken_layouts_and_failed_downloads_give_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let extract =
        |data: &Path| extract_output(env!("CARGO_BIN_EXE_urbansound8k"), tmp.path(), data);
    let fails_with = pipeline::testing::assert_fails_with;
    fails_with(
        extract(&tmp.path().join("nowhere")),
        &["metadata/UrbanSound8K.csv not found; run `urbansound8k download` or pass --data-dir"],
    );

    let data = make_corpus(&tmp.path().join("c"));
    let csv_path = data.join("metadata/UrbanSound8K.csv");
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    std::fs::write(&csv_path, csv.replace(",classID,", ",class_id,")).unwrap();
    fails_with(extract(&data), &["column `classID` missing"]);
    // Line 3 (the second slice): a fold outside 1..=10, then a malformed fsID.
    let lines: Vec<&str> = csv.lines().collect();
    let with_line3 = |new: String| {
        let mut l: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        l[2] = new;
        l.join("\n") + "\n"
    };
    let fields: Vec<&str> = lines[2].split(',').collect();
    let mut f = fields.clone();
    f[5] = "11";
    std::fs::write(&csv_path, with_line3(f.join(","))).unwrap();
    fails_with(
        extract(&data),
        &["UrbanSound8K.csv: line 3: fold 11 is not in 1..=10"],
    );
    let mut f = fields.clone();
    f[1] = "abc";
    std::fs::write(&csv_path, with_line3(f.join(","))).unwrap();
    fails_with(
        extract(&data),
        &["UrbanSound8K.csv: line 3: column `fsID` has \"abc\""],
    );
    let mut f = fields.clone();
    f[7] = "siren";
    std::fs::write(&csv_path, with_line3(f.join(","))).unwrap();
    fails_with(
        extract(&data),
        &["UrbanSound8K.csv: line 6: classID 3 is \"dog_bark\" here but \"siren\" above"],
    );
    std::fs::write(&csv_path, with_line3(fields[..6].join(","))).unwrap();
    fails_with(extract(&data), &["UrbanSound8K.csv: line 3 is malformed"]);
    std::fs::write(&csv_path, &csv).unwrap();
    std::fs::remove_file(data.join("audio/fold2/101075-3-0-1.wav")).unwrap();
    fails_with(
        extract(&data),
        &["audio/fold2/101075-3-0-1.wav", "pass --data-dir"],
    );

    // The host is down (the mirror has no file): the error says what to put where.
    let server = TestServer::serve(HashMap::new());
    let target = tmp.path().join("dl/UrbanSound8K");
    let out = task(env!("CARGO_BIN_EXE_urbansound8k"), &["download"])
        .arg("--data-dir")
        .arg(&target)
        .arg("--mirror")
        .arg(&server.url)
        .output()
        .unwrap();
    fails_with(
        out,
        &[
            "https://zenodo.org/records/1203745",
            "UrbanSound8K.tar.gz",
            &tmp.path()
                .join("dl/.downloads/UrbanSound8K.tar.gz")
                .display()
                .to_string(),
            &target
                .join("metadata/UrbanSound8K.csv")
                .display()
                .to_string(),
        ],
    );
}

/// Ten-fold cross-validation with the tiny WavLM: its own store, results and probes.
#[test]
fn runs_on_a_tiny_wavlm() {
    let bin = env!("CARGO_BIN_EXE_urbansound8k");
    let r = tiny_wavlm_end_to_end(bin, "urbansound8k", make_corpus, &[]);
    assert_eq!(r["protocol"]["folds"].as_array().map(Vec::len), Some(10));
}
