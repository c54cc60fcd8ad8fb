//! NSynth end to end on a small corpus in the exact official layout: `nsynth-{train,valid,test}/`
//! with `examples.json` (every real field, keyed by note_str) and `audio/<note_str>.wav` (16 kHz,
//! 4 s, 16-bit mono), served as the three `.jsonwav.tar.gz` archives from 127.0.0.1. Like the
//! real data, one family (synth_lead) has training notes only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use pipeline::testing::{assert_success as ok, tiny_model_arg as model};
use pipeline::testing::{class_tone, tar_gz_dir, write_wav, TestServer, WavEncoding};
use pipeline::testing::{extract_output, task, task_in, tiny_wavlm_end_to_end};

/// (family index, family, source index): bass, guitar, keyboard everywhere, synth_lead in train
/// only.
const FAMILIES: [(usize, &str, usize); 4] = [
    (0, "bass", 2),
    (3, "guitar", 0),
    (4, "keyboard", 1),
    (9, "synth_lead", 2),
];
const SOURCES: [&str; 3] = ["acoustic", "electronic", "synthetic"];
const QUALITIES: [&str; 10] = [
    "bright",
    "dark",
    "distortion",
    "fast_decay",
    "long_release",
    "multiphonic",
    "nonlinear_env",
    "percussive",
    "reverb",
    "tempo-synced",
];
/// Notes per family in train / valid / test (synth_lead: train only).
const PER_PART: [(&str, usize); 3] = [("train", 3), ("valid", 2), ("test", 2)];
const N_TRAIN: usize = 12;
const N_VALID: usize = 6;
const N_TEST: usize = 6;
const N: usize = N_TRAIN + N_VALID + N_TEST;

/// Writes `nsynth-{train,valid,test}/` under `root` (the data directory).
fn make_corpus(root: &Path) -> PathBuf {
    let mut note_id = 1_000u64;
    for (pi, (part, per_family)) in PER_PART.iter().enumerate() {
        let dir = root.join(format!("nsynth-{part}"));
        let mut entries = Vec::new();
        for (label, (family, family_str, source)) in FAMILIES.iter().enumerate() {
            if *family_str == "synth_lead" && *part != "train" {
                continue;
            }
            // Instruments of valid/test are not in train, as in the real split.
            let number = pi * 10 + label;
            let instrument_str = format!("{family_str}_{}_{number:03}", SOURCES[*source]);
            for k in 0..*per_family {
                let pitch = 40 + 7 * k as u8;
                let velocity = [25u8, 50, 75, 100, 127][k % 5];
                let note_str = format!("{instrument_str}-{pitch:03}-{velocity:03}");
                let qualities: Vec<u8> = (0..10)
                    .map(|q| u8::from((q + k + label) % 4 == 0))
                    .collect();
                let qualities_str: Vec<&str> = qualities
                    .iter()
                    .zip(QUALITIES)
                    .filter(|(q, _)| **q == 1)
                    .map(|(_, s)| s)
                    .collect();
                let value = serde_json::json!({
                    "qualities": qualities,
                    "pitch": pitch,
                    "note": note_id,
                    "instrument_source_str": SOURCES[*source],
                    "velocity": velocity,
                    "instrument_str": instrument_str,
                    "instrument": 100 + number,
                    "sample_rate": 16000,
                    "qualities_str": qualities_str,
                    "instrument_source": source,
                    "note_str": note_str,
                    "instrument_family": family,
                    "instrument_family_str": family_str,
                });
                note_id += 1;
                let audio = class_tone(label, note_id, 4.0, 16_000);
                write_wav(
                    &dir.join(format!("audio/{note_str}.wav")),
                    16_000,
                    1,
                    WavEncoding::Pcm16,
                    &audio,
                );
                entries.push(format!("{:?}: {value}", note_str));
            }
        }
        // The real files are not sorted by note_str: write the entries in reverse order.
        entries.reverse();
        std::fs::write(
            dir.join("examples.json"),
            format!("{{\n    {}\n}}", entries.join(",\n    ")),
        )
        .unwrap();
    }
    root.to_path_buf()
}

fn nsynth(dir: &Path, args: &[&str]) -> Command {
    task_in(env!("CARGO_BIN_EXE_nsynth"), dir, args)
}

#[test]
fn run_trains_on_train_selects_on_valid_and_tests_on_test() {
    let tmp = tempfile::tempdir().unwrap();
    let src = make_corpus(&tmp.path().join("src"));
    let files: HashMap<String, Vec<u8>> = ["train", "valid", "test"]
        .iter()
        .map(|p| {
            (
                format!("nsynth-{p}.jsonwav.tar.gz"),
                tar_gz_dir(&src.join(format!("nsynth-{p}"))),
            )
        })
        .collect();
    let server = TestServer::serve(files);
    let data = tmp.path().join("data/nsynth");
    // The archives served here are stand-ins, so the pinned md5s are skipped for this run.
    let out = ok(nsynth(
        tmp.path(),
        &[
            "run",
            "--model",
            &model(),
            "--epochs",
            "10",
            "--chunk-size",
            "5",
        ],
    )
    .arg("--data-dir")
    .arg(&data)
    .arg("--mirror")
    .arg(&server.url)
    .env("HUBERT_PROBE_SKIP_CHECKSUMS", "1")
    .output()
    .unwrap());
    assert_eq!(server.requests(), 3);
    for p in ["train", "valid", "test"] {
        assert!(
            data.join(format!("nsynth-{p}/examples.json")).is_file(),
            "{p}"
        );
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("note: synth_lead has no valid or test examples"),
        "{stderr}"
    );

    let results_dir = tmp.path().join("results/nsynth/tiny-base");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(results_dir.join("results.json")).unwrap())
            .unwrap();
    let report = std::fs::read_to_string(results_dir.join("report.md")).unwrap();
    assert_eq!(results["task"], "nsynth");
    assert_eq!(results["protocol"]["name"], "official");
    let folds = results["protocol"]["folds"].as_array().unwrap();
    assert_eq!(folds.len(), 1);
    assert_eq!(folds[0]["name"], "test");
    assert_eq!(folds[0]["train"], N_TRAIN);
    assert_eq!(folds[0]["valid"], N_VALID);
    assert_eq!(folds[0]["test"], N_TEST);
    assert_eq!(results["features"]["items"], N);
    let all: Vec<&str> = nsynth::FAMILIES.to_vec();
    for probe in ["linear", "mlp"] {
        let p = &results["probes"][probe];
        assert_eq!(p["classes"], serde_json::json!(all));
        let cm: Vec<Vec<u64>> = serde_json::from_value(p["confusion_matrix"].clone()).unwrap();
        assert_eq!(cm.len(), 11);
        assert_eq!(cm.iter().flatten().sum::<u64>(), N_TEST as u64);
        for (c, row) in cm.iter().enumerate() {
            let want = if [0, 3, 4].contains(&c) { 2 } else { 0 };
            assert_eq!(row.iter().sum::<u64>(), want, "support of {}", all[c]);
        }
        let diag: u64 = (0..11).map(|i| cm[i][i]).sum();
        let acc = p["accuracy"]["mean"].as_f64().unwrap();
        assert!((acc - diag as f64 / N_TEST as f64).abs() < 1e-9);
        // The best epoch was chosen on the validation split.
        let eval = &p["evaluations"][0];
        assert!(eval["best_epoch"].as_u64().is_some(), "{eval}");
        assert_eq!(eval["sizes"], serde_json::json!([N_TRAIN, N_VALID, N_TEST]));
        // Macro-F1 is scikit-learn's f1_score(y_true, y_pred, average="macro") on the stored
        // predictions, recomputed here from predictions_<probe>.csv.
        let (y_true, y_pred) =
            read_predictions(&results_dir.join(format!("predictions_{probe}.csv")));
        assert_eq!(y_true.len(), N_TEST);
        let mut from_csv = vec![vec![0u64; 11]; 11];
        for (&t, &p) in y_true.iter().zip(&y_pred) {
            from_csv[t][p] += 1;
        }
        assert_eq!(
            from_csv, cm,
            "{probe}: predictions CSV agrees with the confusion matrix"
        );
        let (want, labels) = sklearn_macro_f1(&y_true, &y_pred);
        let got = p["macro_f1"]["mean"].as_f64().unwrap();
        assert!(
            (got - want).abs() < 1e-12,
            "{probe}: macro-F1 {got}, scikit-learn's {want}"
        );
        assert_eq!(p["evaluations"][0]["macro_f1"].as_f64().unwrap(), got);
        // The 11-class mean is kept apart, and differs whenever a family is absent.
        let all11 = p["macro_f1_all_classes"]["mean"].as_f64().unwrap();
        assert!(
            (all11 * 11.0 - got * labels.len() as f64).abs() < 1e-9,
            "{probe}"
        );
        assert!(labels.len() < 11);
        // Families in neither the test labels nor the predictions are absent: listed per
        // evaluation and pooled, with null scores. synth_lead is among them unless predicted.
        let absent: Vec<&str> = (0..11)
            .filter(|c| !labels.contains(c))
            .map(|c| all[c])
            .collect();
        assert!(absent.contains(&"brass"));
        assert_eq!(
            absent.contains(&"synth_lead"),
            !y_pred.contains(&9),
            "{probe}"
        );
        assert_eq!(p["absent_classes"], serde_json::json!(absent), "{probe}");
        assert_eq!(
            p["evaluations"][0]["absent_classes"],
            serde_json::json!(absent)
        );
        for (c, row) in p["per_class"].as_array().unwrap().iter().enumerate() {
            assert_eq!(row["name"], all[c]);
            let is_absent = absent.contains(&all[c]);
            assert_eq!(row["absent"], is_absent, "{probe} {}", all[c]);
            assert_eq!(row["f1"].is_null(), is_absent, "{probe} {}", all[c]);
            assert_eq!(row["precision"].is_null(), is_absent, "{probe} {}", all[c]);
        }
        assert!(p.get("task_metrics").is_none());
        assert_eq!(
            results["predictions"][probe],
            format!("predictions_{probe}.csv")
        );
        // The report shows the corrected figure.
        let line = format!(
            "| {probe} | {:.4} ± {:.4} | {:.4} ± {:.4} |",
            acc,
            p["accuracy"]["std"].as_f64().unwrap(),
            got,
            p["macro_f1"]["std"].as_f64().unwrap()
        );
        assert!(report.contains(&line), "{line}\n{report}");
    }
    // The split itself says which families have no valid or test items.
    let gaps = &folds[0]["classes_without_items"];
    assert_eq!(
        gaps["train"],
        serde_json::json!(["brass", "flute", "mallet", "organ", "reed", "string", "vocal"])
    );
    for part in ["valid", "test"] {
        assert_eq!(
            gaps[part],
            serde_json::json!([
                "brass",
                "flute",
                "mallet",
                "organ",
                "reed",
                "string",
                "synth_lead",
                "vocal"
            ]),
            "{part}"
        );
    }
    // Next to the figures: the definition and the families missing from the split.
    let table = report.find("| linear |").unwrap();
    let after = &report[table..report.find("## Per class").unwrap()];
    for want in [
        "scikit-learn's `f1_score(average=\"macro\")`",
        "- synth_lead has no valid or test items\n",
        "- no items at all: brass, flute, mallet, organ, reed, string, vocal\n",
        "Absent (no test item, never predicted), left out of macro-F1",
        "over all 11 class names",
    ] {
        assert!(
            after.contains(want),
            "{want:?} not under the results table:\n{report}"
        );
    }
    assert!(
        report.contains("| brass (absent) | — | — | — | 0 |"),
        "{report}"
    );
    assert!(tmp
        .path()
        .join("models/nsynth_tiny-base_linear_classifier.safetensors")
        .is_file());
}

/// `(true_label, predicted_label)` columns of a `predictions_<probe>.csv`, found by header name.
fn read_predictions(path: &Path) -> (Vec<usize>, Vec<usize>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (t, p) = (col("true_label"), col("predicted_label"));
    lines
        .map(|line| {
            let cells: Vec<&str> = line.split(',').collect();
            (
                cells[t].parse::<usize>().unwrap(),
                cells[p].parse::<usize>().unwrap(),
            )
        })
        .unzip()
}

/// scikit-learn's `f1_score(y_true, y_pred, average="macro")`, written out from its definition:
/// the labels are `unique_labels(y_true, y_pred)` (sorted), each label's F1 is
/// `2·tp / (#true + #predicted)`, and the result is their plain mean. Returns it with the labels.
fn sklearn_macro_f1(y_true: &[usize], y_pred: &[usize]) -> (f64, Vec<usize>) {
    let mut labels: Vec<usize> = y_true.iter().chain(y_pred).copied().collect();
    labels.sort_unstable();
    labels.dedup();
    let f1 = |l: usize| {
        let n_true = y_true.iter().filter(|&&t| t == l).count();
        let n_pred = y_pred.iter().filter(|&&p| p == l).count();
        let tp = y_true
            .iter()
            .zip(y_pred)
            .filter(|(&t, &p)| t == l && p == l)
            .count();
        2.0 * tp as f64 / (n_true + n_pred) as f64
    };
    let sum: f64 = labels.iter().map(|&l| f1(l)).sum();
    (sum / labels.len() as f64, labels)
}

fn store_bytes(features_dir: &Path) -> Vec<u8> {
    std::fs::read(features_dir.join("nsynth_features_tiny-base.safetensors")).unwrap()
}

#[test]
fn parts_extracted_one_by_one_in_any_order_assemble_the_same_store() {
    let tmp = tempfile::tempdir().unwrap();
    let data = make_corpus(&tmp.path().join("nsynth"));
    let extract = |features: &Path, part: Option<&str>| {
        let mut cmd = task(env!("CARGO_BIN_EXE_nsynth"), &[]);
        cmd.arg("extract")
            .arg("--data-dir")
            .arg(&data)
            .args(["--model", &model(), "--chunk-size", "5"])
            .arg("--features-dir")
            .arg(features);
        if let Some(p) = part {
            cmd.args(["--part", p]);
        }
        let out = ok(cmd.output().unwrap());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let reference_dir = tmp.path().join("all");
    let stderr = extract(&reference_dir, None);
    assert!(stderr.contains(&format!("embedded {N} items")), "{stderr}");
    let reference = store_bytes(&reference_dir);

    // Items: train 0..12, valid 12..18, test 18..24; chunks of 5 straddle the part boundaries.
    // valid: chunks 2, 3 (10 items); test: chunks 3 (done), 4 (4 items); train: 0, 1 (10 items).
    let dir = tmp.path().join("parts");
    let store = dir.join("nsynth_features_tiny-base.safetensors");
    for (part, embedded, last) in [
        ("valid", 10, false),
        ("test", 4, false),
        ("train", 10, true),
    ] {
        let stderr = extract(&dir, Some(part));
        assert!(
            stderr.contains(&format!("embedded {embedded} items")),
            "{part}: {stderr}"
        );
        assert_eq!(store.is_file(), last, "{part}: {stderr}");
        if !last {
            assert!(stderr.contains("shard done"), "{stderr}");
        }
    }
    assert!(
        store_bytes(&dir) == reference,
        "three parts assemble the same store as one extraction"
    );
    // Once complete, any part is up to date.
    assert!(extract(&dir, Some("test")).contains("up to date"));

    let (_, header) = safetensors::SafeTensors::read_metadata(&reference).unwrap();
    let meta = header.metadata().clone().unwrap();
    let items: Vec<serde_json::Value> = serde_json::from_str(&meta["items"]).unwrap();
    assert_eq!(items.len(), N);
    let splits: Vec<&str> = items.iter().map(|i| i["split"].as_str().unwrap()).collect();
    assert!(splits[..N_TRAIN].iter().all(|s| *s == "train"));
    assert!(splits[N_TRAIN..N_TRAIN + N_VALID]
        .iter()
        .all(|s| *s == "valid"));
    assert!(splits[N_TRAIN + N_VALID..].iter().all(|s| *s == "test"));
    let paths: Vec<&str> = items.iter().map(|i| i["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths[0],
        "nsynth-train/audio/bass_synthetic_000-040-025.wav"
    );
    assert!(
        paths[..N_TRAIN].windows(2).all(|w| w[0] < w[1]),
        "sorted by note_str"
    );
    assert_eq!(items[0]["group"], "bass_synthetic_000");
    assert_eq!(items[0]["label"], 0);
    assert_eq!(
        items[N_TRAIN - 1]["label"],
        9,
        "synth_lead sorts last in train"
    );
    // The items metadata stays small: about 125 bytes per item for the longest real names.
    let per_item = meta["items"].len() as f64 / N as f64;
    assert!(per_item < 130.0, "{per_item} bytes per item");

    let out = task(
        env!("CARGO_BIN_EXE_nsynth"),
        &["run", "--part", "train", "--data-dir"],
    )
    .arg(&data)
    .output()
    .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("`run` extracts every item"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn broken_layouts_and_bad_archives_give_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let extract = |data: &Path| extract_output(env!("CARGO_BIN_EXE_nsynth"), tmp.path(), data);
    let fails_with = pipeline::testing::assert_fails_with;
    fails_with(
        extract(&tmp.path().join("nowhere")),
        &["nsynth-train/examples.json not found; run `nsynth download` or pass --data-dir"],
    );

    let data = make_corpus(&tmp.path().join("c"));
    let json_path = data.join("nsynth-valid/examples.json");
    let json = std::fs::read_to_string(&json_path).unwrap();
    let key = "guitar_acoustic_011-047-050";
    assert!(json.contains(key));
    // Family int and string disagree.
    std::fs::write(
        &json_path,
        json.replace("\"instrument_family\":3", "\"instrument_family\":4"),
    )
    .unwrap();
    fails_with(
        extract(&data),
        &[
            "nsynth-valid/examples.json",
            "instrument_family 4 is \"keyboard\" but instrument_family_str is \"guitar\"",
        ],
    );
    // A field of the wrong type: the entry and field are named.
    let at = json.find(&format!("\"{key}\": {{")).unwrap();
    let broken = format!(
        "{}{}",
        &json[..at],
        json[at..].replacen("\"pitch\":47", "\"pitch\":\"47\"", 1)
    );
    std::fs::write(&json_path, broken).unwrap();
    fails_with(extract(&data), &[&format!("entry {key}.pitch"), "line"]);
    // Truncated JSON.
    std::fs::write(&json_path, &json[..json.len() / 2]).unwrap();
    fails_with(extract(&data), &["nsynth-valid/examples.json", "line"]);
    std::fs::write(&json_path, &json).unwrap();
    std::fs::remove_file(data.join(format!("nsynth-valid/audio/{key}.wav"))).unwrap();
    fails_with(extract(&data), &[&format!("nsynth-valid/audio/{key}.wav")]);

    // The pinned md5 is checked: a stand-in archive is refused.
    let server = TestServer::serve(HashMap::from([(
        "nsynth-test.jsonwav.tar.gz".to_string(),
        tar_gz_dir(&data.join("nsynth-test")),
    )]));
    let target = tmp.path().join("dl/nsynth");
    let out = nsynth(tmp.path(), &["download", "--part", "test"])
        .arg("--data-dir")
        .arg(&target)
        .arg("--mirror")
        .arg(&server.url)
        .output()
        .unwrap();
    fails_with(
        out,
        &[
            "nsynth-test.jsonwav.tar.gz",
            "5e6f8719bf7e16ad0a00d518b78af77d",
        ],
    );
    assert!(!target.join("nsynth-test").exists());
    // With the checks skipped, `download --part test` fetches only that part into the data dir.
    ok(nsynth(tmp.path(), &["download", "--part", "test"])
        .arg("--data-dir")
        .arg(&target)
        .arg("--mirror")
        .arg(&server.url)
        .env("HUBERT_PROBE_SKIP_CHECKSUMS", "1")
        .output()
        .unwrap());
    assert!(target.join("nsynth-test/examples.json").is_file());
    assert!(!target.join("nsynth-train").exists());
}

/// The official train/valid/test split with the tiny WavLM: its own store, results and probes.
#[test]
fn runs_on_a_tiny_wavlm() {
    let r = tiny_wavlm_end_to_end(env!("CARGO_BIN_EXE_nsynth"), "nsynth", make_corpus, &[]);
    assert_eq!(r["features"]["items"], N);
}
