//! ESC-50 end to end on a small corpus in the exact official layout (44.1 kHz mono 16-bit 5 s
//! WAVs, the real CSV header and file naming, five folds), served as a zip from 127.0.0.1.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use pipeline::testing::{assert_success as ok, tiny_model_arg as model};
use pipeline::testing::{task, task_in};
use pipeline::testing::{zip_dir, TestServer};

/// The shared corpus (`common::make_corpus`) with 5.0 s clips.
fn make_corpus(parent: &Path) -> std::path::PathBuf {
    common::make_corpus(parent, 5.0, &["A", "B"])
}

fn esc50(dir: &Path, args: &[&str]) -> Command {
    task_in(env!("CARGO_BIN_EXE_esc50"), dir, args)
}

#[test]
fn run_downloads_extracts_trains_and_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let src = make_corpus(&tmp.path().join("src"));
    let zip = zip_dir(&src);
    let server = TestServer::serve(HashMap::from([("ESC-50-master.zip".to_string(), zip)]));
    let data = tmp.path().join("data/ESC-50-master");
    let out = ok(
        esc50(tmp.path(), &["run", "--model", &model(), "--epochs", "30"])
            .arg("--data-dir")
            .arg(&data)
            .arg("--mirror")
            .arg(&server.url)
            .output()
            .unwrap(),
    );
    assert!(server.requests() >= 1);
    assert!(
        data.join("meta/esc50.csv").is_file(),
        "archive unpacked into data/"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("linear") && stdout.contains("mlp"),
        "{stdout}"
    );

    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("results/esc50/tiny-base/results.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(results["task"], "esc50");
    assert_eq!(results["protocol"]["name"], "official");
    assert_eq!(results["protocol"]["folds"].as_array().unwrap().len(), 5);
    assert_eq!(results["hyperparameters"]["epochs"], 30);
    assert_eq!(results["hyperparameters"]["batch_size"], 8);
    assert_eq!(results["features"]["items"], 50);
    assert_eq!(results["features"]["sha256"].as_str().unwrap().len(), 64);
    for probe in ["linear", "mlp"] {
        let p = &results["probes"][probe];
        let per_fold = p["accuracy"]["per_fold"].as_array().unwrap();
        assert_eq!(per_fold.len(), 5);
        let cm: Vec<Vec<u64>> = serde_json::from_value(p["confusion_matrix"].clone()).unwrap();
        assert_eq!(cm.len(), 5);
        let total: u64 = cm.iter().flatten().sum();
        assert_eq!(
            total, 50,
            "every clip is tested exactly once over the folds"
        );
        for (c, row) in cm.iter().enumerate() {
            assert_eq!(row.iter().sum::<u64>(), 10, "class {c} support");
        }
        // Folds are equal-sized, so the mean of per-fold accuracies is the pooled accuracy.
        let diag: u64 = (0..5).map(|i| cm[i][i]).sum();
        let mean = p["accuracy"]["mean"].as_f64().unwrap();
        assert!(
            (mean - diag as f64 / 50.0).abs() < 1e-9,
            "{probe}: {mean} vs {diag}/50"
        );
        let fold_mean = per_fold.iter().map(|v| v.as_f64().unwrap()).sum::<f64>() / 5.0;
        assert!((fold_mean - mean).abs() < 1e-9);
        let f1 = p["macro_f1"]["mean"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&f1));
        assert_eq!(p["classes"][0], "dog");
        assert_eq!(p["per_class"].as_array().unwrap().len(), 5);
        // Pure tones per class are separable: both probes should learn them.
        assert!(mean > 0.6, "{probe} accuracy {mean} on separable tones");
    }
    for f in ["report.md", "confusion_linear.csv", "confusion_mlp.csv"] {
        assert!(
            tmp.path().join("results/esc50/tiny-base").join(f).is_file(),
            "{f}"
        );
    }
    let csv = std::fs::read_to_string(tmp.path().join("results/esc50/tiny-base/confusion_mlp.csv"))
        .unwrap();
    assert!(
        csv.starts_with("true\\predicted,dog,rooster,pig,cow,frog\n"),
        "{csv}"
    );
    for f in [
        "esc50_tiny-base_linear_classifier.safetensors",
        "esc50_tiny-base_three_classifier.safetensors",
        "esc50_tiny-base_scaler.safetensors",
    ] {
        assert!(tmp.path().join("models").join(f).is_file(), "{f}");
    }
    // A second run reuses the download and the features.
    let before = server.requests();
    let out = ok(esc50(
        tmp.path(),
        &[
            "run",
            "--model",
            &model(),
            "--epochs",
            "2",
            "--probe",
            "linear",
        ],
    )
    .arg("--data-dir")
    .arg(&data)
    .arg("--mirror")
    .arg(&server.url)
    .output()
    .unwrap());
    assert_eq!(server.requests(), before, "no second download");
    assert!(String::from_utf8_lossy(&out.stderr).contains("up to date"));
}

/// Asserts equal bytes without printing megabytes on failure.
fn assert_same(a: &[u8], b: &[u8], what: &str) {
    if a != b {
        let first = a.iter().zip(b).position(|(x, y)| x != y);
        panic!(
            "{what}: {} vs {} bytes, first difference at {first:?}",
            a.len(),
            b.len()
        );
    }
}

fn store_bytes(features_dir: &Path) -> Vec<u8> {
    std::fs::read(features_dir.join("esc50_features_tiny-base.safetensors")).unwrap()
}

#[test]
fn killed_extraction_resumes_and_shards_merge_to_the_same_store() {
    let tmp = tempfile::tempdir().unwrap();
    let data = make_corpus(tmp.path());
    let data_arg = data.display().to_string();
    let common = [
        "--data-dir",
        &data_arg,
        "--model",
        &model(),
        "--chunk-size",
        "4",
    ];

    // Reference: one uninterrupted extraction.
    let reference_dir = tmp.path().join("reference");
    ok(task(env!("CARGO_BIN_EXE_esc50"), &["extract"])
        .args(common)
        .arg("--features-dir")
        .arg(&reference_dir)
        .output()
        .unwrap());
    let reference = store_bytes(&reference_dir);

    // Kill -9 midway (throttled so it is still running), then resume.
    let dir = tmp.path().join("killed");
    let parts = dir.join("esc50_features_tiny-base.safetensors.parts");
    let mut child = task(env!("CARGO_BIN_EXE_esc50"), &["extract"])
        .args(common)
        .arg("--features-dir")
        .arg(&dir)
        .env("HUBERT_PROBE_THROTTLE_MS", "400")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let chunks = |p: &Path| {
        std::fs::read_dir(p)
            .map(|d| {
                d.filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with("chunk-")
                })
                .count()
            })
            .unwrap_or(0)
    };
    while chunks(&parts) < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "extraction made no progress"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let done = chunks(&parts);
    assert!(
        (2..13).contains(&done),
        "killed midway: {done} of 13 chunks"
    );
    assert!(!dir.join("esc50_features_tiny-base.safetensors").exists());
    let out = ok(task(env!("CARGO_BIN_EXE_esc50"), &["extract"])
        .args(common)
        .arg("--features-dir")
        .arg(&dir)
        .output()
        .unwrap());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("embedded {} items", 50 - 4 * done)),
        "{stderr}"
    );
    assert_same(
        &store_bytes(&dir),
        &reference,
        "resumed store equals the uninterrupted one",
    );
    assert!(!parts.exists(), "parts removed after assembly");

    // Two shards on "two machines", then merge.
    let (a, b) = (tmp.path().join("shard-a"), tmp.path().join("shard-b"));
    for (shard, d) in [("1/2", &a), ("2/2", &b)] {
        let out = ok(task(env!("CARGO_BIN_EXE_esc50"), &["extract"])
            .args(common)
            .args(["--shard", shard])
            .arg("--features-dir")
            .arg(d)
            .output()
            .unwrap());
        assert!(String::from_utf8_lossy(&out.stderr).contains("shard done"));
    }
    ok(task(
        env!("CARGO_BIN_EXE_esc50"),
        &[
            "merge",
            "--model",
            &model(),
            "--data-dir",
            &data_arg,
            "--features-dir",
        ],
    )
    .arg(&a)
    .arg(b.join("esc50_features_tiny-base.safetensors.parts"))
    .output()
    .unwrap());
    assert_same(
        &store_bytes(&a),
        &reference,
        "merged shards equal the unsharded store",
    );

    // The store is readable as documented: features [N, L, D], labels [N], item metadata.
    let st = safetensors::SafeTensors::deserialize(&reference).unwrap();
    assert_eq!(st.tensor("features").unwrap().shape(), &[50, 1, 32]);
    assert_eq!(st.tensor("labels").unwrap().shape(), &[50]);
    let (_, header) = safetensors::SafeTensors::read_metadata(&reference).unwrap();
    let meta = header.metadata().clone().unwrap();
    let items: Vec<serde_json::Value> = serde_json::from_str(&meta["items"]).unwrap();
    assert_eq!(items[0]["path"], "audio/1-100100-A-0.wav");
    assert_eq!(items[0]["split"], "fold1");
    assert_eq!(meta["task"], "esc50");
    let names: Vec<String> = serde_json::from_str(&meta["class_names"]).unwrap();
    assert_eq!(names, ["dog", "rooster", "pig", "cow", "frog"]);
}

#[test]
fn broken_layouts_and_bad_files_give_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |data: &Path, extra: &[&str]| {
        task_in(
            env!("CARGO_BIN_EXE_esc50"),
            tmp.path(),
            &["extract", "--model", &model()],
        )
        .arg("--data-dir")
        .arg(data)
        .args(extra)
        .output()
        .unwrap()
    };
    let fails_with =
        |out: Output, needle: &str| pipeline::testing::assert_fails_with(out, &[needle]);
    fails_with(
        run(&tmp.path().join("nowhere"), &[]),
        "meta/esc50.csv not found; run `esc50 download` or pass --data-dir",
    );

    let data = make_corpus(&tmp.path().join("c"));
    let csv_path = data.join("meta/esc50.csv");
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    std::fs::write(&csv_path, csv.replace("filename,fold,", "file,fold,")).unwrap();
    fails_with(run(&data, &[]), "column `filename` missing");
    std::fs::write(&csv_path, csv.replacen(",1,0,dog,", ",7,0,dog,", 1)).unwrap();
    fails_with(run(&data, &[]), "fold 7 is not in 1..=5");
    std::fs::write(&csv_path, &csv).unwrap();

    std::fs::remove_file(data.join("audio/2-100200-A-0.wav")).unwrap();
    fails_with(run(&data, &[]), "2-100200-A-0.wav");
    std::fs::write(
        data.join("audio/2-100200-A-0.wav"),
        b"RIFF\x10\x00\x00\x00WAVEjunk",
    )
    .unwrap();
    fails_with(run(&data, &[]), "2-100200-A-0.wav");
    let out = run(&data, &["--skip-bad"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(
        tmp.path()
            .join("features/esc50_features_tiny-base.safetensors"),
    )
    .unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap();
    let skipped: Vec<serde_json::Value> = serde_json::from_str(&meta["skipped"]).unwrap();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0]["path"], "audio/2-100200-A-0.wav");
}

#[test]
fn esc10_with_the_original_studys_random_split() {
    let tmp = tempfile::tempdir().unwrap();
    let data = make_corpus(tmp.path());
    ok(esc50(
        tmp.path(),
        &[
            "run",
            "--esc10",
            "--split",
            "random",
            "--epochs",
            "10",
            "--model",
            &model(),
        ],
    )
    .arg("--data-dir")
    .arg(&data)
    .output()
    .unwrap());
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("results/esc10/tiny-base/results.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(results["protocol"]["name"], "random");
    assert_eq!(results["features"]["items"], 20);
    let folds = results["protocol"]["folds"].as_array().unwrap();
    assert_eq!(folds.len(), 1);
    assert_eq!(folds[0]["test"], 4, "20% of each of the 2 classes");
    assert_eq!(
        results["probes"]["linear"]["classes"],
        serde_json::json!(["dog", "rooster"])
    );
}

#[test]
fn parameters_are_checked_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let data = make_corpus(tmp.path());
    let features = tmp.path().join("features");
    let cmd = |args: &[&str]| {
        let mut c = esc50(tmp.path(), args);
        c.arg("--data-dir").arg(&data);
        c
    };
    let fails_with =
        |out: Output, needles: &[&str]| pipeline::testing::assert_fails_with(out, needles);

    // Layer indices are checked against the model's config before anything is decoded.
    fails_with(
        cmd(&["extract", "--model", &model(), "--layers", "0,9"])
            .output()
            .unwrap(),
        &["hidden-state index 9 out of range", "(0..=2)"],
    );
    assert!(!features.exists(), "nothing written");
    fails_with(
        cmd(&["run", "--model", &model(), "--layer", "7"])
            .arg("--results-dir")
            .arg(tmp.path().join("results"))
            .output()
            .unwrap(),
        &["--layer 7 out of range"],
    );
    assert!(!features.exists(), "nothing extracted");

    // Bounded numbers, refused by the command-line parser with the range.
    for (flag, value, needle) in [
        ("--epochs", "1e12", "expected a whole number in 1..=100000"),
        (
            "--batch-size",
            "100000000000",
            "out of range: expected 1..=65536",
        ),
        ("--runs", "1000000000", "out of range: expected 1..=1000"),
        ("--lr", "1e300", "expected a learning rate in (0, 10]"),
        ("--lr", "NaN", "expected a learning rate in (0, 10]"),
        ("--test-fraction", "1.5", "strictly between 0 and 1"),
    ] {
        fails_with(cmd(&["train", flag, value]).output().unwrap(), &[needle]);
    }
    fails_with(
        cmd(&["extract", "--chunk-size", "0"]).output().unwrap(),
        &["--chunk-size"],
    );

    // Shard arithmetic never overflows: the last of 2^63 shards takes the last chunk.
    let huge = "9223372036854775808/9223372036854775808";
    let out = ok(cmd(&[
        "extract",
        "--model",
        &model(),
        "--chunk-size",
        "16",
        "--shard",
        huge,
    ])
    .output()
    .unwrap());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("shard done: 1 of 4 chunks"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The dtype's spelling does not matter: `bfloat16` resumes the chunks of `bf16`.
    let other = tmp.path().join("dtype");
    let extract_half = |dtype: &str, shard: &str| {
        let mut c = esc50(
            &other,
            &["extract", "--model", &model(), "--chunk-size", "16"],
        );
        c.args(["--dtype", dtype, "--shard", shard])
            .arg("--data-dir")
            .arg(&data);
        ok(c.output().unwrap())
    };
    extract_half("bf16", "1/2");
    let out = extract_half("bfloat16", "2/2");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("starting over"), "{stderr}");
    assert!(stderr.contains("features: "), "assembled: {stderr}");
    let store = other.join("features/esc50_features_tiny-base.safetensors");
    let bytes = std::fs::read(&store).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(header.metadata().as_ref().unwrap()["dtype"], "bf16");

    // A device this binary cannot use fails even when the store is up to date.
    if !cfg!(feature = "cuda") {
        let mut c = esc50(
            &other,
            &["extract", "--model", &model(), "--device", "cuda"],
        );
        c.args(["--dtype", "bf16"]).arg("--data-dir").arg(&data);
        fails_with(c.output().unwrap(), &["built without CUDA support"]);
    }
    fails_with(
        cmd(&["extract", "--device", "tpu"]).output().unwrap(),
        &["unknown device \"tpu\""],
    );

    // An output folder that cannot be created fails before training, not after.
    let blocker = tmp.path().join("a-file");
    std::fs::write(&blocker, b"").unwrap();
    let out = cmd(&["train", "--epochs", "1"])
        .arg("--results-dir")
        .arg(blocker.join("results"))
        .output()
        .unwrap();
    fails_with(out, &["cannot create output folder"]);
    let out = cmd(&["train", "--epochs", "1"])
        .arg("--models-dir")
        .arg(blocker.join("models"))
        .arg("--results-dir")
        .arg(tmp.path().join("results"))
        .output()
        .unwrap();
    fails_with(out, &["cannot create output folder"]);
    assert!(
        !tmp.path()
            .join("results/esc50/tiny-base/results.json")
            .exists(),
        "no training happened"
    );
}

/// The cap flags reach the download: a tight `--max-unpack-bytes` stops the unpack with an error
/// naming the flag, nothing is unpacked, and raising it (with a size suffix) lets the same cached
/// archive unpack without another request.
#[test]
fn download_caps_are_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let src = make_corpus(&tmp.path().join("src"));
    let zip = zip_dir(&src);
    let server = TestServer::serve(HashMap::from([("ESC-50-master.zip".to_string(), zip)]));
    let data = tmp.path().join("data/ESC-50-master");
    let download = |cap: &str| {
        esc50(tmp.path(), &["download", "--max-unpack-bytes", cap])
            .arg("--data-dir")
            .arg(&data)
            .arg("--mirror")
            .arg(&server.url)
            .output()
            .unwrap()
    };
    let out = download("1000");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--max-unpack-bytes") && stderr.contains("1000 bytes"),
        "{stderr}"
    );
    assert!(!data.exists(), "something was unpacked");
    ok(download("1G"));
    assert!(data.join("meta/esc50.csv").is_file());
    assert_eq!(server.requests(), 1, "the cached archive was fetched again");
    let out = download("lots");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a byte count"));
}
